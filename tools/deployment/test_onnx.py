"""Test (and evaluate) an exported ``.onnx`` detector with ONNX Runtime,
through the config's test pipeline and evaluator (``tools/test.py``'s
flags): boxes are scaled back to the original images as PyTorch does."""
import argparse

from mmdet_cdetr.cli import (add_runner_args, add_test_args, apply_test_args,
                             build_runner, finish_distributed, load_config,
                             report_user_errors)
from mmdet_cdetr.deployment import (OPTIMIZATION_LEVELS,
                                    onnxruntime_detector_cfg)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('config', help='config the model was exported from')
    parser.add_argument('model', help='.onnx file of pytorch2onnx.py')
    add_test_args(parser)
    parser.add_argument(
        '--ort-opt',
        choices=list(OPTIMIZATION_LEVELS),
        default='all',
        help='ONNX Runtime graph optimisation level')
    parser.add_argument(
        '--batch-size',
        type=int,
        help='images per batch (default: the config\'s); a file exported '
        'with --batch-size runs each batch in one call')
    parser.add_argument(
        '--threads',
        type=int,
        help='ONNX Runtime intra-op threads (default: one per core)')
    add_runner_args(parser)
    return parser.parse_args()


def main(args: argparse.Namespace) -> None:
    cfg = load_config(args)
    cfg.model = onnxruntime_detector_cfg(
        cfg.model, args.model, optimization=args.ort_opt, threads=args.threads)
    cfg.load_from = None
    if args.batch_size is not None:
        cfg.test_dataloader.batch_size = args.batch_size
    apply_test_args(cfg, args)
    build_runner(cfg).test()
    finish_distributed()


if __name__ == '__main__':
    cli_args = parse_args()
    with report_user_errors(cfg_options=cli_args.cfg_options or {}):
        main(cli_args)
