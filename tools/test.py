"""Test (and evaluate) a detector (mmdet's ``tools/test.py`` flags).

``--eval bbox`` is accepted as in MMDetection 2.x: it evaluates COCO box AP
with mmdet's ``CocoMetric``, whatever evaluator the config names.
"""
import argparse
import os
import os.path as osp
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmdet_cdetr.utils import prepare_cpu_distributed, report_user_errors


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the dir to save the file with evaluation metrics')
    parser.add_argument(
        '--eval',
        nargs='+',
        choices=['bbox', 'proposal'],
        help='COCO metrics to evaluate (MMDetection 2.x style)')
    parser.add_argument(
        '--out',
        type=str,
        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved; relative to '
        'the work dir of the run')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def use_coco_metric(cfg: Config, metrics: list) -> None:
    """Evaluate ``metrics`` with CocoMetric on the test annotation file."""
    evaluator = cfg.test_evaluator
    if isinstance(evaluator,
                  dict) and evaluator.get('type') in ('CocoMetric',
                                                      'mmdet.CocoMetric'):
        evaluator.metric = metrics
        return
    dataset = cfg.test_dataloader.dataset
    cfg.test_evaluator = ConfigDict(
        type='mmdet.CocoMetric',
        ann_file=osp.join(dataset.get('data_root', ''), dataset.ann_file),
        metric=metrics,
        format_only=False)


def enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    """Switch on mmdet's DetVisualizationHook for --show / --show-dir."""
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise KeyError(f'{args.config} has no default_hooks.visualization, '
                       'needed by --show / --show-dir')
    hooks.visualization.draw = True
    if args.show:
        hooks.visualization.show = True
        hooks.visualization.wait_time = args.wait_time
    if args.show_dir:
        hooks.visualization.test_out_dir = args.show_dir


def main(args: argparse.Namespace) -> None:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg.load_from = args.checkpoint
    if args.eval:
        use_coco_metric(cfg, args.eval)
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file, got {args.out}')
        cfg.test_evaluator = [
            cfg.test_evaluator,
            ConfigDict(type='mmdet.DumpDetResults', out_file_path=args.out)
        ]

    prepare_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.test()


if __name__ == '__main__':
    cli_args = parse_args()
    with report_user_errors(checkpoint=cli_args.checkpoint):
        main(cli_args)
