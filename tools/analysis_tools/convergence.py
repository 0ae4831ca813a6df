"""Convergence study: train detectors on several seeds and compare how many
epochs each needs to reach an AP (the paper's Fig. 1(b)), as the mean and
range over seeds."""
import argparse
import json
import os
import os.path as osp
import signal
import sys

from mmengine.config import DictAction

from mmdet_cdetr.analysis.convergence import (format_table, model_names,
                                              plot_curves, read_ap_curve,
                                              run_work_dir, summarise,
                                              train_configs)
from mmdet_cdetr.cli import report_user_errors
from mmdet_cdetr.utils import ArgumentError, InputNotFoundError

DEFAULT_CONFIGS = [
    'configs/convergence/detr_r18_scratch.py',
    'configs/convergence/conditional_detr_r18_scratch.py',
    'configs/convergence/mmdet_conditional_detr_r18_scratch.py',
    'configs/convergence/group_conditional_detr_r18_scratch.py',
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        'configs',
        nargs='*',
        default=DEFAULT_CONFIGS,
        help='configs to train; the first is the reference (DETR)')
    parser.add_argument(
        '--work-dir',
        default='work_dirs/convergence',
        help='one sub-directory per config and seed, plus the outputs')
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=[0, 1, 2],
        help='training seeds (randomness.seed); every config runs with each')
    parser.add_argument(
        '--jobs',
        type=int,
        default=1,
        help='configs trained at the same time (CPU threads are split)')
    parser.add_argument(
        '--skip-train',
        action='store_true',
        help='only read the logs already in --work-dir and report')
    parser.add_argument(
        '--target-ap',
        type=float,
        nargs='*',
        default=[],
        help='more APs to report epochs-to-reach for (besides the '
        "reference's final AP)")
    parser.add_argument(
        '--plot', help='PNG file of the curves (default: WORK_DIR/ap.png)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of every config, e.g. '
        'train_cfg.max_epochs=2')
    return parser.parse_args()


def main(args: argparse.Namespace) -> None:
    names = model_names(args.configs)
    if len(set(names)) != len(names):
        raise ArgumentError(f'config file names must differ, got {names}')
    runs = [(config, run_work_dir(args.work_dir, name, seed),
             dict(args.cfg_options or {}, **{'randomness.seed': seed}))
            for seed in args.seeds
            for config, name in zip(args.configs, names)]
    if not args.skip_train:
        for config in args.configs:
            if not osp.isfile(config):
                raise InputNotFoundError(f'config not found: {config}')
        train_configs(*zip(*runs), jobs=args.jobs)
    curves = {
        name: {
            seed: read_ap_curve(run_work_dir(args.work_dir, name, seed))
            for seed in args.seeds
        }
        for name in names
    }
    summary = summarise(curves, names[0], args.target_ap)
    os.makedirs(args.work_dir, exist_ok=True)
    plot_file = args.plot or osp.join(args.work_dir, 'ap.png')
    os.makedirs(osp.dirname(plot_file) or '.', exist_ok=True)
    plot_curves(curves, plot_file, summary['reference_final_ap'])
    json_file = osp.join(args.work_dir, 'convergence.json')
    with open(json_file, 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2)
    print(format_table(summary))
    print(f'\n{names[0]}: mean AP rose by '
          f'{summary["reference_last_gain"]:.3f} over its last quarter of '
          'epochs (near 0: plateaued)')
    print(f'\nplot: {plot_file}\nsummary: {json_file}')


def exit_on_sigterm(signum: int, frame) -> None:
    """SIGTERM as an exit, so that the runs still training are stopped
    too (``train_configs`` ends them when it is left)."""
    sys.exit(128 + signum)


if __name__ == '__main__':
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    with report_user_errors():
        main(parse_args())
