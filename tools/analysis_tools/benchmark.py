"""Inference speed of one config (MMDetection's ``benchmark.py CONFIG
[CHECKPOINT]``), optionally side by side in one run with PyTorch under
autocast (``--amp``), its ONNX exports under ONNX Runtime (``--onnx``, e.g.
float32 and INT8 files, one row per session setting) and reference models
(``--reference``, e.g. mmdet's built-in Conditional DETR). Each row also
gives its GFLOP/s against this machine's peak, measured in the same run
(float32's; bf16's for the autocast row). All see
the same random image(s) of ``--shape``; ratios are to the config's PyTorch
model. With ``--batch-size N`` every timed run detects in N images: PyTorch
and files exported with ``--batch-size`` in one call, other files one image
after the other; images/s are printed per row. For training speed and
memory of several detectors see ``compare_detectors.py``."""
import argparse
import itertools
import os.path as osp
import statistics

import mmengine
import torch
from mmengine.runner import load_checkpoint

from mmdet_cdetr.analysis.benchmark import (achieved_gflops, build_detector,
                                            copy_matching_weights,
                                            flops_by_module, format_peaks,
                                            make_batch)
from mmdet_cdetr.analysis.inference_speed import (format_latency_table,
                                                  pytorch_inference,
                                                  time_interleaved)
from mmdet_cdetr.analysis.machine_peak import (describe_processor,
                                               measure_peaks_around)
from mmdet_cdetr.converters.checkpoint_format import check_checkpoint
from mmdet_cdetr.deployment import OPTIMIZATION_LEVELS, OrtRunner
from mmdet_cdetr.utils import (add_freed_memory_arg, apply_freed_memory_choice,
                               report_user_errors)


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
        '--max-iter', type=int, default=10, help='timed runs per row')
    parser.add_argument(
        '--num-warmup', type=int, default=2, help='untimed runs first')
    parser.add_argument(
        '--threads', type=int, help='torch CPU threads (default: torch\'s)')
    add_freed_memory_arg(parser)
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
    freed_memory_kept = apply_freed_memory_choice(
        False if args.return_freed_memory else None, args.device)
    model = build_detector(args.config, device)
    if args.checkpoint:
        check_checkpoint(args.checkpoint)
        load_checkpoint(model, args.checkpoint, map_location=device)
    inputs, samples = make_batch(model, args.batch_size, tuple(args.shape), 0,
                                 model.bbox_head.num_classes, False)
    candidates = {'pytorch': pytorch_inference(model, inputs, samples)}
    if args.amp:
        candidates['pytorch+amp'] = pytorch_inference(
            model, inputs, samples, amp=True)
    weights = model.state_dict()
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
    times, peaks = measure_peaks_around(
        lambda: time_interleaved(candidates, args.max_iter, args.num_warmup,
                                 device, print), device)
    flops = flops_by_module(model, inputs, samples)['']
    processor = describe_processor(device)
    mmengine.dump(
        dict(
            setting=dict(
                vars(args),
                torch_threads=torch.get_num_threads(),
                freed_memory_kept=freed_memory_kept,
                processor=processor),
            seconds=times,
            peaks=peaks,
            flops=flops),
        args.out,
        indent=2)
    print(f'{processor}, freed memory '
          f'{"kept" if freed_memory_kept else "returned"}')
    print(format_peaks(peaks))
    print(format_latency_table(times))
    for name, runs in times.items():
        median = statistics.median(runs['wall'])
        amp = name.endswith('+amp')
        gflops, of_peak = achieved_gflops(flops, median, peaks, amp)
        print(f'{name}: {args.batch_size / median:.1f} images/s, '
              f'{gflops:.0f} GFLOP/s ({of_peak:.2f} of the '
              f'{"bf16" if amp else "float32"} peak)')
    print(f'\nmeasurements: {args.out}')


if __name__ == '__main__':
    cli_args = parse_args()
    with report_user_errors(checkpoint=cli_args.checkpoint):
        main(cli_args)
