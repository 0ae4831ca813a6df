"""Inference speed of one config (MMDetection's ``benchmark.py CONFIG
[CHECKPOINT]``), optionally side by side in one run with PyTorch under
autocast (``--amp``), its ONNX exports under ONNX Runtime (``--onnx``, e.g.
float32 and INT8 files, one row per session setting) and reference models
(``--reference``, e.g. mmdet's built-in Conditional DETR). The config's
PyTorch model runs as ``tools/test.py`` runs it (with the speed-ups its
``SpeedUpHook`` asks for; then also without them, as its own row). Each row
also gives its images/s and GFLOP/s. All see the same random image(s) of
``--shape``; ratios are to the config's PyTorch model. With
``--batch-size N`` every timed run detects in N images: PyTorch and files
exported with ``--batch-size`` in one call, other files one image
after the other; images/s are printed per row. ``--mixed-sizes`` gives the
batch's images different sizes (padded to ``--shape``); a config with
``model.test_cfg.batch_independent=True`` then also runs without it, as the
row that prices it. For training speed and
memory of several detectors see ``compare_detectors.py``."""
import argparse
import copy
import itertools
import os.path as osp
import statistics

import mmengine
import torch
from mmengine.runner import load_checkpoint

from mmdet_cdetr.analysis.benchmark import (build_detector,
                                            copy_matching_weights,
                                            flops_by_module, load_config,
                                            make_batch)
from mmdet_cdetr.analysis.inference_speed import (format_latency_table,
                                                  pytorch_inference,
                                                  time_interleaved)
from mmdet_cdetr.cli import report_user_errors
from mmdet_cdetr.converters.checkpoint_format import check_checkpoint
from mmdet_cdetr.deployment import OPTIMIZATION_LEVELS, OrtRunner
from mmdet_cdetr.speedup import apply_configured_speedups
from mmdet_cdetr.utils.checkpoint_file import check_checkpoint_fits


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('config', help='config file')
    parser.add_argument(
        'checkpoint', nargs='?', help='checkpoint (default: random weights)')
    parser.add_argument(
        '--onnx',
        nargs='+',
        default=[],
        help='exports of the config (tools/deployment/pytorch2onnx.py, '
        'quantize_onnx.py)')
    parser.add_argument(
        '--ort-opt',
        nargs='+',
        choices=list(OPTIMIZATION_LEVELS),
        default=['all'],
        help='ONNX Runtime graph optimisation levels to time')
    parser.add_argument(
        '--ort-threads',
        nargs='+',
        type=int,
        default=[0],
        help='ONNX Runtime intra-op thread counts to time (0: its default)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='also time PyTorch under autocast (bf16 on the CPU, fp16 on '
        'GPUs), as tools/test.py --amp runs')
    parser.add_argument(
        '--reference',
        nargs='+',
        default=[],
        metavar='NAME=CONFIG',
        help='more PyTorch models to time, weights copied from the config\'s '
        'where names and shapes match')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[800, 1216],
        metavar=('H', 'W'),
        help='image size')
    parser.add_argument(
        '--batch-size', type=int, default=1, help='images per timed run')
    parser.add_argument(
        '--mixed-sizes',
        action='store_true',
        help='images of the batch of different sizes, image i 1 - i/8 of '
        '--shape in each side (padded to --shape)')
    parser.add_argument(
        '--max-iter', type=int, default=10, help='timed runs per row')
    parser.add_argument(
        '--num-warmup', type=int, default=2, help='untimed runs first')
    parser.add_argument(
        '--threads', type=int, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--device', default='cpu', help='PyTorch device')
    parser.add_argument(
        '--out',
        default='work_dirs/benchmark/inference.json',
        help='JSON file of all measurements')
    return parser.parse_args()


def main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_detector(args.config, device)
    if args.checkpoint:
        check_checkpoint(args.checkpoint)
        load_checkpoint(model, args.checkpoint, map_location=device)
        check_checkpoint_fits(model, args.checkpoint)
    inputs, samples = make_batch(
        model,
        args.batch_size,
        tuple(args.shape),
        0,
        model.bbox_head.num_classes,
        False,
        mixed_sizes=args.mixed_sizes)
    weights = model.state_dict()
    flops = flops_by_module(model.eval(), inputs, samples)['']
    plain = copy.deepcopy(model)
    speedups = apply_configured_speedups(
        model, load_config(args.config).get('custom_hooks'), inference=True)
    candidates = {'pytorch': pytorch_inference(model, inputs, samples)}
    if args.mixed_sizes and getattr(model, 'batch_independent_inference',
                                    False):
        dependent = copy.deepcopy(model)
        dependent.batch_independent_inference = False
        candidates['pytorch (batch-dependent)'] = pytorch_inference(
            dependent, inputs, samples)
    if speedups:
        candidates['pytorch (no speed-ups)'] = pytorch_inference(
            plain, inputs, samples)
    if args.amp:
        candidates['pytorch+amp'] = pytorch_inference(
            model, inputs, samples, amp=True)
    for spec in args.reference:
        name, config = spec.split('=', 1)
        reference = build_detector(config, device)
        copy_matching_weights(reference, weights)
        candidates[name] = pytorch_inference(reference, inputs, samples)
    images = inputs.cpu().numpy()
    for onnx_file, opt, threads in itertools.product(args.onnx, args.ort_opt,
                                                     args.ort_threads):
        runner = OrtRunner(onnx_file, opt, threads or None)
        name = (f'onnxruntime {osp.basename(onnx_file)} opt={opt} '
                f'threads={threads or "default"}')
        if runner.batched:
            candidates[name] = (lambda run=runner: run(images))
        else:
            candidates[name] = (
                lambda run=runner: [run(image[None]) for image in images])
    times = time_interleaved(candidates, args.max_iter, args.num_warmup,
                             device, print)
    mmengine.dump(
        dict(
            setting=dict(
                vars(args),
                torch_threads=torch.get_num_threads(),
                torch=torch.__version__,
                speedups=speedups),
            seconds=times,
            flops=flops),
        args.out,
        indent=2)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'device {device}')
    print(format_latency_table(times))
    for name, runs in times.items():
        median = statistics.median(runs['wall'])
        print(f'{name}: {args.batch_size / median:.1f} images/s, '
              f'{2 * flops / median / 1e9:.0f} GFLOP/s')
    print(f'\nmeasurements: {args.out}')


if __name__ == '__main__':
    cli_args = parse_args()
    with report_user_errors(checkpoint=cli_args.checkpoint):
        main(cli_args)
