"""Test (and evaluate) a detector (mmdet's ``tools/test.py`` flags).

``--eval bbox`` is accepted as in MMDetection 2.x: it evaluates COCO box AP
with mmdet's ``CocoMetric``, whatever evaluator the config names.
"""
import argparse
import os.path as osp

from mmdet_cdetr.utils import (InputNotFoundError, add_runner_args,
                               add_test_args, apply_test_args, build_runner,
                               load_config, report_user_errors)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    add_test_args(parser)
    add_runner_args(parser)
    return parser.parse_args()


def main(args: argparse.Namespace) -> None:
    cfg = load_config(args)
    if not osp.isfile(args.checkpoint):
        raise InputNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg.load_from = args.checkpoint
    apply_test_args(cfg, args)
    build_runner(cfg).test()


if __name__ == '__main__':
    cli_args = parse_args()
    with report_user_errors(cli_args.checkpoint, cli_args.cfg_options or {}):
        main(cli_args)
