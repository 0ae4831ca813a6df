"""Detect objects in an image or a directory of images and save the images
with boxes, class names and scores drawn (mmdet's ``DetInferencer``).
``--weights`` is a checkpoint or an ``.onnx`` export, run by ONNX Runtime."""
import argparse
import os.path as osp
import warnings

from mmdet.apis import DetInferencer
from mmengine.runner.amp import autocast

from mmdet_cdetr.registry import DATASETS
from mmdet_cdetr.speedup import apply_configured_speedups
from mmdet_cdetr.utils import (ArgumentError, InputNotFoundError,
                               report_user_errors, warn_if_autocast_is_slow)
from mmdet_cdetr.utils.config_options import read_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Detect objects in images')
    parser.add_argument('inputs', help='an image file or a directory')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--weights',
        required=True,
        help='checkpoint file, or an .onnx file of pytorch2onnx.py')
    parser.add_argument(
        '--out-dir',
        default='outputs',
        help='output directory: drawn images in vis/, predictions in preds/')
    parser.add_argument(
        '--pred-score-thr',
        type=float,
        default=0.3,
        help='draw detections scoring at least this')
    parser.add_argument(
        '--batch-size', type=int, default=1, help='images per batch')
    parser.add_argument(
        '--device', help='device used for inference (default: cuda if any)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='infer under autocast (fp16 on GPUs, bf16 on the CPU)')
    parser.add_argument(
        '--no-save-pred',
        action='store_true',
        help='do not save the predictions as json files')
    return parser.parse_args()


def main(args: argparse.Namespace) -> None:
    if not osp.exists(args.inputs):
        raise InputNotFoundError(f'no such image or directory: {args.inputs}')
    cfg = read_config(args.config)
    weights = args.weights
    if weights.endswith('.onnx'):
        if args.amp:
            raise ArgumentError(
                '--amp applies to PyTorch checkpoints; an .onnx '
                'file runs in the precision it was exported in')
        from mmdet_cdetr.deployment import onnxruntime_detector_cfg
        cfg.model = onnxruntime_detector_cfg(cfg.model, weights)
        weights = None
    # The config's scope, so that its types resolve to our components.
    # Without weights DetInferencer warns that it names COCO's classes;
    # the config's are set below.
    with warnings.catch_warnings(record=weights is None):
        inferencer = DetInferencer(
            model=cfg,
            weights=weights,
            device=args.device,
            scope=cfg.get('default_scope', 'mmdet'))
    if weights is None:
        inferencer.model.dataset_meta = inferencer.visualizer.dataset_meta = (
            DATASETS.build(dict(cfg.test_dataloader.dataset,
                                lazy_init=True)).metainfo)
    else:
        apply_configured_speedups(
            inferencer.model, cfg.get('custom_hooks'), inference=True)
    device_type = inferencer.model.data_preprocessor.device.type
    if args.amp:
        warn_if_autocast_is_slow(device_type)
    with autocast(device_type, enabled=args.amp):
        inferencer(
            args.inputs,
            batch_size=args.batch_size,
            out_dir=args.out_dir,
            pred_score_thr=args.pred_score_thr,
            no_save_pred=args.no_save_pred)
    print(f'drawn images saved in {osp.join(args.out_dir, "vis")}')


if __name__ == '__main__':
    cli_args = parse_args()
    with report_user_errors(checkpoint=cli_args.weights):
        main(cli_args)
