"""Detect objects in an image or a directory of images and save the images
with boxes, class names and scores drawn (mmdet's ``DetInferencer``).
``--weights`` is a checkpoint or an ``.onnx`` export, run by ONNX Runtime."""
import argparse
import os
import os.path as osp
import sys
import warnings
from typing import List, Tuple

import mmcv
from mmdet.apis import DetInferencer
from mmengine.runner.amp import autocast

from mmdet_cdetr.cli import read_config, report_user_errors
from mmdet_cdetr.converters.checkpoint_format import check_checkpoint
from mmdet_cdetr.registry import DATASETS
from mmdet_cdetr.speedup import apply_configured_speedups
from mmdet_cdetr.utils import (ArgumentError, InputNotFoundError, UserError,
                               warn_if_autocast_is_slow)
from mmdet_cdetr.utils.checkpoint_file import check_checkpoint_fits


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Detect objects in images')
    parser.add_argument('inputs', help='an image file or a directory')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--weights',
        required=True,
        help='checkpoint file or http(s) URL (ours, MMDetection\'s, or the '
        'official repository\'s or HuggingFace\'s, converted as it is '
        'loaded), or an .onnx file of pytorch2onnx.py')
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


# What DetInferencer reads from a directory (mmdet's IMG_EXTENSIONS).
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif',
                  '.tiff', '.webp')


class SkippedImagesError(UserError):
    """Some input images could not be read (the others were drawn)."""


def list_images(inputs: str) -> List[str]:
    """The image files of ``inputs`` (a file, or a directory searched as
    DetInferencer searches it), or an error naming what is missing."""
    if not osp.exists(inputs):
        raise InputNotFoundError(f'no such image or directory: {inputs}')
    if not osp.isdir(inputs):
        return [inputs]
    images = sorted(
        osp.join(inputs, name) for name in os.listdir(inputs)
        if name.lower().endswith(IMAGE_SUFFIXES)
        and osp.isfile(osp.join(inputs, name)))
    if not images:
        raise InputNotFoundError(
            f'no images in {inputs} (looked for {", ".join(IMAGE_SUFFIXES)} '
            'files)')
    return images


def readable_images(images: List[str]) -> Tuple[List[str], List[str]]:
    """``images`` split into those that decode and those that do not,
    with one warning for each of the latter."""
    readable, skipped = [], []
    for path in images:
        try:
            with open(path, 'rb') as f:
                ok = mmcv.imfrombytes(f.read()) is not None
        except Exception:  # any decoder's refusal of the bytes
            ok = False
        if ok:
            readable.append(path)
        else:
            skipped.append(path)
            print(
                f'warning: skipping {path}: not a readable image',
                file=sys.stderr)
    return readable, skipped


def check_out_dir(out_dir: str) -> None:
    """``--out-dir`` must be a directory or not exist yet."""
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise ArgumentError(f'--out-dir {out_dir} is a file, not a '
                            'directory: choose another output directory')


def main(args: argparse.Namespace) -> None:
    images = list_images(args.inputs)
    check_out_dir(args.out_dir)
    images, skipped = readable_images(images)
    if not images:
        raise InputNotFoundError(f'no readable image in {args.inputs} '
                                 f'({len(skipped)} skipped)')
    cfg = read_config(args.config)
    weights = args.weights
    if not weights.endswith('.onnx'):
        check_checkpoint(weights)
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
        # A checkpoint of another model (or converted from a partial one)
        # would otherwise detect at random, silently.
        check_checkpoint_fits(inferencer.model, weights)
        apply_configured_speedups(
            inferencer.model, cfg.get('custom_hooks'), inference=True)
    device_type = inferencer.model.data_preprocessor.device.type
    if args.amp:
        warn_if_autocast_is_slow(device_type)
    with autocast(device_type, enabled=args.amp):
        inferencer(
            images,
            batch_size=args.batch_size,
            out_dir=args.out_dir,
            pred_score_thr=args.pred_score_thr,
            no_save_pred=args.no_save_pred)
    vis_dir = osp.join(args.out_dir, 'vis')
    print(f'{len(images)} drawn images saved in {vis_dir}')
    if skipped:
        shown = ', '.join(skipped[:3]) + (', ...' if len(skipped) > 3 else '')
        raise SkippedImagesError(
            f'{len(skipped)} of {len(images) + len(skipped)} images could '
            f'not be read and were skipped ({shown}); the other '
            f'{len(images)} are drawn in {vis_dir}')


if __name__ == '__main__':
    cli_args = parse_args()
    with report_user_errors(checkpoint=cli_args.weights):
        main(cli_args)
