"""Quantise an exported detector's convolutions to INT8 (static, QDQ),
calibrated on training images of the config through its test pipeline.
Evaluate the result with test_onnx.py: it changes the detections."""
import argparse

from mmdet_cdetr.cli import read_config, report_user_errors
from mmdet_cdetr.deployment import OrtRunner, calibration_images, quantize_int8
from mmdet_cdetr.utils import ArgumentError
from mmdet_cdetr.utils.checkpoint_file import check_output_path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('config', help='config the model was exported from')
    parser.add_argument('model', help='.onnx file of pytorch2onnx.py')
    parser.add_argument('--out', required=True, help='the quantised .onnx')
    parser.add_argument(
        '--num-images',
        type=int,
        default=32,
        help='training images to calibrate the activation ranges on')
    return parser.parse_args()


def main(args: argparse.Namespace) -> None:
    OrtRunner(args.model)  # a clear error for a missing or foreign file
    check_output_path(args.out, [args.model, args.config], force=True)
    if args.num_images < 1:
        raise ArgumentError(f'--num-images {args.num_images}: calibration '
                            'needs at least one image')
    cfg = read_config(args.config)
    quantize_int8(args.model, args.out,
                  calibration_images(cfg, args.num_images))
    print(f'quantised {args.model} -> {args.out}')


if __name__ == '__main__':
    with report_user_errors():
        main(parse_args())
