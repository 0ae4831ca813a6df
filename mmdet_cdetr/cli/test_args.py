"""The evaluation and output flags of ``tools/test.py``, shared with
``tools/deployment/test_onnx.py``."""
import argparse
import copy
import os.path as osp
import warnings

from mmengine.config import Config, ConfigDict, DictAction

from mmdet_cdetr.utils.errors import ArgumentError, ConfigError
from .config_check import NEW_KEY_PREFIX


def add_test_args(parser: argparse.ArgumentParser) -> None:
    """mmdet's ``--eval``, ``--eval-options``, ``--out``, ``--show``,
    ``--show-dir`` flags."""
    parser.add_argument(
        '--eval',
        nargs='+',
        choices=['bbox', 'proposal'],
        help='COCO metrics to evaluate (MMDetection 2.x style)')
    parser.add_argument(
        '--eval-options',
        nargs='+',
        action=DictAction,
        help='arguments of the test evaluator(s), key=value pairs, e.g. '
        'classwise=True for a per-class AP table (MMDetection 2.x style)')
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
    if args.eval_options:
        for evaluator in _evaluators(cfg):
            evaluator.update(args.eval_options)
    if any(
            key.lstrip(NEW_KEY_PREFIX).startswith('val_evaluator')
            for key in getattr(args, 'cfg_options', None) or {}):
        warnings.warn('--cfg-options val_evaluator.* sets the evaluator of '
                      'validation during training, not of this test: use '
                      '--eval-options or --cfg-options test_evaluator.*')
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ArgumentError(f'--out must be a .pkl file, got {args.out}')
        cfg.test_evaluator = [
            cfg.test_evaluator,
            ConfigDict(type='mmdet.DumpDetResults', out_file_path=args.out)
        ]


def _evaluators(cfg: Config) -> list:
    """The test evaluator's metric configs (one, or a list)."""
    evaluator = cfg.test_evaluator
    return list(evaluator) if isinstance(evaluator,
                                         (list, tuple)) else [evaluator]


def use_flip_tta(cfg: Config) -> None:
    """Test with mmdet's ``DetTTAModel`` on the image and its horizontal
    flip, unless the config has its own ``tta_model`` / ``tta_pipeline``.

    Each view gives its ``max_per_img`` detections (the flipped one's boxes
    flipped back); the model pools them and keeps the best ``max_per_img``
    after class-wise NMS at IoU 0.5, so a box both views find counts once
    (DETR's own set prediction needs no NMS, but two views are two sets).
    """
    max_per_img = cfg.model.get('test_cfg', {}).get('max_per_img', 100)
    tta_model = cfg.get(
        'tta_model',
        ConfigDict(
            type='mmdet.DetTTAModel',
            tta_cfg=dict(
                nms=dict(type='nms', iou_threshold=0.5),
                max_per_img=max_per_img)))
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # dataset wrappers
        dataset = dataset.dataset
    if 'tta_pipeline' in cfg:
        pipeline = cfg.tta_pipeline
    else:
        pipeline = copy.deepcopy(dataset.pipeline)
        pack = copy.deepcopy(pipeline[-1])
        if 'meta_keys' in pack:
            pack.meta_keys = tuple(pack.meta_keys) + ('flip', 'flip_direction')
        pipeline[-1] = ConfigDict(
            type='TestTimeAug',
            transforms=[[
                dict(type='RandomFlip', prob=1.),
                dict(type='RandomFlip', prob=0.)
            ], [pack]])
    cfg.model = ConfigDict(**tta_model, module=cfg.model)
    dataset.pipeline = pipeline


def use_coco_metric(cfg: Config, metrics: list) -> None:
    """Evaluate ``metrics`` with CocoMetric on the test annotation file."""
    evaluator = cfg.test_evaluator
    coco_types = ('CocoMetric', 'mmdet.CocoMetric', 'mmdet_cdetr.CocoMetric',
                  'ClassOrderCocoMetric', 'mmdet_cdetr.ClassOrderCocoMetric')
    if isinstance(evaluator, dict) and evaluator.get('type') in coco_types:
        evaluator.metric = metrics
        return
    dataset = cfg.test_dataloader.dataset
    cfg.test_evaluator = ConfigDict(
        type='mmdet_cdetr.ClassOrderCocoMetric',
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
