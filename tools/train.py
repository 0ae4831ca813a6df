"""Train a detector (mmdet's ``tools/train.py`` flags)."""
import argparse
import os

import torch
from mmengine.device import is_mlu_available, is_npu_available

from mmdet_cdetr.cli import (add_runner_args, apply_resume, build_runner,
                             check_launcher_environment, check_training_values,
                             finish_distributed, load_config, lock_work_dir,
                             report_user_errors)
from mmdet_cdetr.engine.hooks import add_run_guards
from mmdet_cdetr.utils import ConfigError


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual batch size')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or from the latest one in '
        'the work dir when no path is given')
    add_runner_args(parser)
    return parser.parse_args()


def use_mixed_precision(optim_wrapper: dict) -> None:
    """mmdet's ``--amp`` on GPUs (mmengine's ``AmpOptimWrapper``, fp16 with
    a dynamic loss scale unless the config sets ``optim_wrapper.dtype``);
    bf16 autocast without a loss scaler on the CPU, where
    ``AmpOptimWrapper`` does not run."""
    if torch.cuda.is_available() or is_npu_available() or is_mlu_available():
        optim_wrapper.type = 'AmpOptimWrapper'
        optim_wrapper.loss_scale = 'dynamic'
    else:
        optim_wrapper.type = 'mmdet_cdetr.BF16OptimWrapper'
        optim_wrapper.pop('loss_scale', None)
        optim_wrapper.pop('dtype', None)


def main(args: argparse.Namespace) -> None:
    check_launcher_environment(args.launcher, 'train')
    if 'LOCAL_RANK' not in os.environ:  # torch.distributed.launch
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = load_config(args)
    if args.amp:
        use_mixed_precision(cfg.optim_wrapper)
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ConfigError(f'{args.config} has no auto_scale_lr.'
                              'base_batch_size, needed by --auto-scale-lr')
        cfg.auto_scale_lr.enable = True
    apply_resume(cfg, args.resume)
    check_training_values(cfg)
    add_run_guards(cfg)
    with lock_work_dir(cfg.work_dir, cfg.launcher):
        build_runner(cfg).train()
    finish_distributed()


if __name__ == '__main__':
    cli_args = parse_args()
    with report_user_errors(cli_args.resume, cli_args.cfg_options or {}):
        main(cli_args)
