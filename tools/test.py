"""Test (and evaluate) a detector (mmdet's ``tools/test.py`` flags).

``--eval bbox`` is accepted as in MMDetection 2.x: it evaluates COCO box AP
with mmdet's ``CocoMetric``, whatever evaluator the config names;
``--eval-options classwise=True`` adds the per-class AP table. ``--tta``
tests on each image and its horizontal flip (mmdet's ``DetTTAModel``).
"""
import argparse
import os

from mmengine.device import get_device

from mmdet_cdetr.cli import (add_runner_args, add_test_args, apply_test_args,
                             build_runner, check_launcher_environment,
                             finish_distributed, load_config,
                             report_user_errors, use_flip_tta)
from mmdet_cdetr.converters.checkpoint_format import check_checkpoint
from mmdet_cdetr.utils import warn_if_autocast_is_slow


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint',
        help='checkpoint file or http(s) URL (ours, MMDetection\'s, or the '
        'official repository\'s or HuggingFace\'s, converted as it is '
        'loaded)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='test under autocast (fp16 on GPUs, bf16 on the CPU)')
    add_test_args(parser)
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation: the image and its horizontal flip')
    add_runner_args(parser)
    return parser.parse_args()


def main(args: argparse.Namespace) -> None:
    check_launcher_environment(args.launcher, 'test')
    if 'LOCAL_RANK' not in os.environ:  # torch.distributed.launch
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = load_config(args)
    # Damaged, or of another implementation we do not convert: named before
    # anything is built (a URL is downloaded here, into the cache).
    check_checkpoint(args.checkpoint)
    cfg.load_from = args.checkpoint
    apply_test_args(cfg, args)
    if args.amp:
        cfg.test_cfg.fp16 = True
        warn_if_autocast_is_slow(get_device())
    if args.tta:
        use_flip_tta(cfg)
    runner = build_runner(cfg)
    runner.test()
    finish_distributed()


if __name__ == '__main__':
    cli_args = parse_args()
    with report_user_errors(cli_args.checkpoint, cli_args.cfg_options or {}):
        main(cli_args)
