"""Compare detectors side by side: training step, transformer+head
forward+backward, inference latency, peak memory, parameters and FLOPs,
each of our configs with its CPU speed-ups on and off (the inference speed
of one config, and of its ONNX export, is ``benchmark.py``'s)."""
import argparse

import mmengine
import torch

from mmdet_cdetr.analysis.benchmark import (DetectorBench, build_detector,
                                            copy_matching_weights,
                                            format_ratios, format_table,
                                            load_config, optim_wrapper_of,
                                            paired_ratios, run_benchmark)
from mmdet_cdetr.cli import report_user_errors
from mmdet_cdetr.speedup import (apply_speedups, speedup_setting,
                                 speedups_wanted)
from mmdet_cdetr.utils import ArgumentError

DEFAULT_MODELS = [
    'ours=configs/conditional_detr/conditional_detr_r50_8x2_50e_coco.py',
    'mmdet-conditional-detr='
    'configs/benchmark/mmdet_conditional_detr_r50_8x2_50e_coco.py',
    'mmdet-detr=mmdet::detr/detr_r50_8xb2-150e_coco.py',
    'mmdet-deformable-detr=mmdet::deformable_detr/'
    'deformable-detr_r50_16xb2-50e_coco.py',
    'mmdet-dab-detr=mmdet::dab_detr/dab-detr_r50_8xb2-50e_coco.py',
]
#: Suffix of the row of a model run without the speed-ups its config asks.
PLAIN = '-no-speedups'


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
        'on GPUs), as NAME+amp rows of the same run')
    parser.add_argument(
        '--only-as-configured',
        action='store_true',
        help='time each model only as its config says (by default a model '
        f'whose config turns speed-ups on also runs without them, as '
        f'NAME{PLAIN})')
    parser.add_argument(
        '--threads', type=int, help='torch CPU threads (default: torch\'s)')
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
    benches, reference, rows = [], None, {}
    for name, config in models.items():
        wanted = speedups_wanted(
            speedup_setting(load_config(config).get('custom_hooks')), device)
        variants = [(name, wanted)]
        if wanted and not args.only_as_configured:
            variants.append((name + PLAIN, False))
        for row, speedups in variants:
            model = build_detector(config, device)
            if reference is None:
                reference = model.state_dict()
            copied = copy_matching_weights(model, reference)
            print(f'{row}: {config} ({copied} tensors from the first model)')
            if speedups:
                apply_speedups(model)
            optim_wrapper = optim_wrapper_of(config, model)
            rows[row] = speedups
            for amp in (False, True) if args.amp else (False, ):
                benches.append(
                    DetectorBench(
                        row + '+amp' * amp,
                        model,
                        device, (args.batch_size, tuple(args.train_size)),
                        tuple(args.infer_size),
                        args.num_gts,
                        model.bbox_head.num_classes,
                        optim_wrapper,
                        amp=amp,
                        speedups=speedups))
    results = run_benchmark(benches, args.repeats, args.warmup, log=print)
    vs_baseline = {
        bench.name: paired_ratios(results, bench.name, args.baseline)
        for bench in benches if bench.name != args.baseline
    }
    amp_speedups = {
        name: paired_ratios(results, name + '+amp', name)
        for name in rows if args.amp
    }
    mmengine.dump(
        dict(
            setting=dict(
                vars(args),
                torch_threads=torch.get_num_threads(),
                torch=torch.__version__,
                speedups=rows),
            results=results,
            vs_baseline=vs_baseline,
            amp_time_ratios=amp_speedups),
        args.out,
        indent=2)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'device {device}')
    print(format_table(results, args.baseline))
    print()
    print(
        format_ratios(vs_baseline, f'time / {args.baseline}, per repetition'))
    if amp_speedups:
        print()
        print(format_ratios(amp_speedups, '--amp time / float32 time'))
    print(f'\nmeasurements: {args.out}')


if __name__ == '__main__':
    with report_user_errors():
        main(parse_args())
