"""Export a detector to ONNX (mmdeploy's I/O: ``input`` (1, 3, H, W) after
the data preprocessor, H and W dynamic; ``dets`` (1, K, 5) and ``labels``
(1, K); with ``--batch-size N`` a dynamic batch and an ``img_shape`` (B, 2)
input) and check the file with ONNX Runtime against PyTorch before
reporting success."""
import argparse
import os
import os.path as osp
from typing import List, Tuple

from mmengine.config import DictAction

from mmdet_cdetr.cli import check_cfg_options, read_config, report_user_errors
from mmdet_cdetr.deployment import OrtRunner, export_onnx, verify_export
from mmdet_cdetr.utils import ArgumentError
from mmdet_cdetr.utils.checkpoint_file import check_output_path
from mmdet_cdetr.visualization import load_detector


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('config', help='config file')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        help='checkpoint file (default: random weights, for a speed test)')
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[800, 1216],
        metavar=('H', 'W'),
        help='image size to trace and verify at (the file takes any size)')
    parser.add_argument(
        '--batch-size',
        type=int,
        default=1,
        help='N > 1: export for padded batches of images of different sizes '
        '(dynamic batch axis, each image\'s valid size an input), traced and '
        'verified on N images of different sizes')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset')
    parser.add_argument(
        '--simplify',
        action='store_true',
        help='fold constant shape arithmetic with onnxslim (the verification '
        'then checks the simplified file)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs')
    return parser.parse_args()


def describe(diffs: dict) -> str:
    """One image's check, saying what could not be compared."""
    if diffs['boundary_ties'] == diffs['detections']:
        # Random weights score every (query, class) at the focal prior.
        return (f'scores within {diffs["scores"]:.1e}; all '
                f'{diffs["detections"]} detections tie at one score (an '
                'untrained model), so boxes and labels were not compared')
    ties = diffs['boundary_ties']
    return (f'scores within {diffs["scores"]:.1e}, boxes within '
            f'{diffs["boxes_px"]:.1e} px' +
            (f', {ties} detections tied with the last kept score not '
             'compared' if ties else ''))


def check_shapes(height: int, width: int,
                 batch_size: int) -> List[Tuple[int, int]]:
    """Image sizes to verify at: the traced one and another (its transpose,
    or 3/4 of its height when square), each alone; or, for a batch,
    ``batch_size`` different sizes of one padded batch, the traced one
    first."""
    if batch_size == 1:
        other = (width, height) if height != width else (height * 3 // 4,
                                                         width)
        return [(height, width), other]
    return [(height - height * i // (2 * batch_size),
             width - width * (2 * i % batch_size) // (2 * batch_size))
            for i in range(batch_size)]


MIN_SIDE = 32  # one cell of the stride-32 feature map


def main(args: argparse.Namespace) -> None:
    if min(args.shape) < MIN_SIDE:
        raise ArgumentError(f'--shape {args.shape[0]} {args.shape[1]}: '
                            f'height and width must be at least {MIN_SIDE} '
                            'pixels (the backbone downsamples by 32)')
    check_output_path(args.out, [args.config, args.checkpoint], force=True)
    cfg = read_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(check_cfg_options(cfg, args.cfg_options))
    if args.checkpoint is None:
        cfg.model.backbone.init_cfg = None  # random weights, no download
    if args.batch_size < 1:
        raise ValueError(f'--batch-size must be positive: {args.batch_size}')
    detector = load_detector(cfg, args.checkpoint)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    export_onnx(detector, args.out, tuple(args.shape), args.opset,
                args.simplify, args.batch_size)
    # Other sizes prove that nothing froze at the traced one.
    shapes = check_shapes(*args.shape, args.batch_size)
    diffs = verify_export(detector, OrtRunner(args.out), shapes,
                          args.batch_size > 1)
    batch = f' (one batch of {len(shapes)})' if args.batch_size > 1 else ''
    checks = ', '.join(f'{name}: {describe(d)}' for name, d in diffs.items())
    print(f'exported {args.out}; ONNX Runtime matches PyTorch{batch} '
          f'({checks})')


if __name__ == '__main__':
    cli_args = parse_args()
    with report_user_errors(cli_args.checkpoint, cli_args.cfg_options or {}):
        main(cli_args)
