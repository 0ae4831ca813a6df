"""The evaluation and output flags of ``tools/test.py``, shared with
``tools/deployment/test_onnx.py``."""
import argparse
import os.path as osp

from mmengine.config import Config, ConfigDict

from .errors import ArgumentError, ConfigError


def add_test_args(parser: argparse.ArgumentParser) -> None:
    """mmdet's ``--eval``, ``--out``, ``--show``, ``--show-dir`` flags."""
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


def apply_test_args(cfg: Config, args: argparse.Namespace) -> None:
    """Set up ``cfg``'s evaluators and visualisation as the flags ask."""
    if args.eval:
        use_coco_metric(cfg, args.eval)
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ArgumentError(f'--out must be a .pkl file, got {args.out}')
        cfg.test_evaluator = [
            cfg.test_evaluator,
            ConfigDict(type='mmdet.DumpDetResults', out_file_path=args.out)
        ]


def use_coco_metric(cfg: Config, metrics: list) -> None:
    """Evaluate ``metrics`` with CocoMetric on the test annotation file."""
    evaluator = cfg.test_evaluator
    coco_types = ('CocoMetric', 'mmdet.CocoMetric', 'mmdet_cdetr.CocoMetric')
    if isinstance(evaluator, dict) and evaluator.get('type') in coco_types:
        evaluator.metric = metrics
        return
    dataset = cfg.test_dataloader.dataset
    cfg.test_evaluator = ConfigDict(
        type='mmdet_cdetr.CocoMetric',
        ann_file=osp.join(dataset.get('data_root', ''), dataset.ann_file),
        metric=metrics,
        format_only=False)


def enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    """Switch on mmdet's DetVisualizationHook for --show / --show-dir."""
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise ConfigError(f'{args.config} has no default_hooks.visualization, '
                          'needed by --show / --show-dir')
    hooks.visualization.draw = True
    if args.show:
        hooks.visualization.show = True
        hooks.visualization.wait_time = args.wait_time
    if args.show_dir:
        hooks.visualization.test_out_dir = args.show_dir
