"""Compare detectors side by side: training step, transformer+head
forward+backward, inference latency, peak memory, parameters and FLOPs, and
the achieved GFLOP/s against this machine's peak measured in the same run
(the inference speed of one config, and of its ONNX export, is
``benchmark.py``'s)."""
import argparse

import mmengine
import torch

from mmdet_cdetr.analysis.benchmark import (DetectorBench, add_achieved,
                                            amp_speedups, build_detector,
                                            copy_matching_weights,
                                            format_amp_speedups, format_peaks,
                                            format_table, optim_wrapper_of,
                                            run_benchmark)
from mmdet_cdetr.analysis.machine_peak import (describe_processor,
                                               measure_peaks_around)
from mmdet_cdetr.analysis.op_profile import format_profile, profile_by_op_class
from mmdet_cdetr.analysis.page_faults import page_fault_seconds
from mmdet_cdetr.utils import (ArgumentError, add_freed_memory_arg,
                               apply_freed_memory_choice, report_user_errors)

DEFAULT_MODELS = [
    'ours=configs/conditional_detr_r50_8x2_50e_coco.py',
    'ours-nchw-backbone='
    'configs/benchmark/conditional_detr_r50_nchw_8x2_50e_coco.py',
    'mmdet-conditional-detr='
    'configs/benchmark/mmdet_conditional_detr_r50_8x2_50e_coco.py',
    'mmdet-detr=mmdet::detr/detr_r50_8xb2-150e_coco.py',
    'mmdet-deformable-detr=mmdet::deformable_detr/'
    'deformable-detr_r50_16xb2-50e_coco.py',
    'mmdet-dab-detr=mmdet::dab_detr/dab-detr_r50_8xb2-50e_coco.py',
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        '--models',
        nargs='+',
        default=DEFAULT_MODELS,
        metavar='NAME=CONFIG',
        help='models to compare; weights are copied from the first one '
        'where parameter names and shapes match')
    parser.add_argument(
        '--baseline',
        help='model the ratios are relative to (default: '
        'mmdet-conditional-detr if among the models, else the first)')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--batch-size', type=int, default=2, help='training batch size')
    parser.add_argument(
        '--train-size',
        type=int,
        nargs=2,
        default=[512, 512],
        metavar=('H', 'W'),
        help='training image size')
    parser.add_argument(
        '--infer-size',
        type=int,
        nargs=2,
        default=[800, 1216],
        metavar=('H', 'W'),
        help='inference image size (batch 1)')
    parser.add_argument(
        '--num-gts', type=int, default=8, help='boxes per training image')
    parser.add_argument(
        '--repeats', type=int, default=5, help='timed repetitions')
    parser.add_argument(
        '--warmup', type=int, default=1, help='untimed repetitions first')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='also time every model under autocast (bf16 on the CPU, fp16 '
        'on GPUs), as NAME+amp rows of the same run, and print the '
        'speed-up of each repetition over float32')
    parser.add_argument(
        '--profile',
        action='store_true',
        help='after timing, profile one training step and one inference '
        'per model and print where the time goes, by operator class')
    parser.add_argument(
        '--threads', type=int, help='torch CPU threads (default: torch\'s)')
    add_freed_memory_arg(parser)
    parser.add_argument(
        '--out',
        default='work_dirs/benchmark/benchmark.json',
        help='JSON file of all measurements')
    return parser.parse_args()


def main(args: argparse.Namespace) -> None:
    models = dict(spec.split('=', 1) for spec in args.models)
    if args.baseline is None:
        builtin = 'mmdet-conditional-detr'
        args.baseline = builtin if builtin in models else next(iter(models))
    if args.baseline not in models:
        raise ArgumentError(f'--baseline {args.baseline!r} is not among the '
                            f'models {list(models)}')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    freed_memory_kept = apply_freed_memory_choice(
        False if args.return_freed_memory else None, args.device)
    benches, reference = [], None
    for name, config in models.items():
        model = build_detector(config, device)
        if reference is None:
            reference = model.state_dict()
            copied = len(reference)
        else:
            copied = copy_matching_weights(model, reference)
        print(f'{name}: {config} ({copied} tensors from the first model)')
        optim_wrapper = optim_wrapper_of(config, model)
        for amp in (False, True) if args.amp else (False, ):
            benches.append(
                DetectorBench(name + '+amp' * amp, model, device,
                              (args.batch_size, tuple(args.train_size)),
                              tuple(args.infer_size), args.num_gts,
                              model.bbox_head.num_classes, optim_wrapper, amp))
    results, peaks = measure_peaks_around(
        lambda: run_benchmark(benches, args.repeats, args.warmup, log=print),
        device)
    for bench in benches:
        add_achieved(results[bench.name], peaks, bench.amp)
    speedups = amp_speedups(results)
    fault_seconds = page_fault_seconds()
    processor = describe_processor(device)
    setting = dict(
        vars(args),
        torch_threads=torch.get_num_threads(),
        freed_memory_kept=freed_memory_kept,
        processor=processor,
        models=models)
    mmengine.dump(
        dict(
            setting=setting,
            peaks=peaks,
            page_fault_seconds=fault_seconds,
            results=results,
            amp_speedups=speedups),
        args.out,
        indent=2)
    print(f'{processor}, freed memory '
          f'{"kept" if freed_memory_kept else "returned"}')
    print(format_peaks(peaks))
    if fault_seconds is not None:
        print(f'minor page fault: {fault_seconds * 1e6:.2f} us')
    print(format_table(results, args.baseline, fault_seconds))
    if speedups:
        print(format_amp_speedups(speedups))
    if args.profile:
        profiles = {
            f'{bench.name} {step}': profile_by_op_class(bench.steps()[step])
            for bench in benches
            for step in ('train', 'infer')
        }
        print(format_profile(profiles))
    print(f'\nmeasurements: {args.out}')


if __name__ == '__main__':
    with report_user_errors():
        main(parse_args())
