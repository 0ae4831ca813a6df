"""What this machine's cores can do: the speed of its fastest dense
operations, measured in the same process and with the same threads as the
model they are compared with, before and after it
(:func:`measure_peaks_around`).

A 3x3 convolution (256 channels, NHWC: oneDNN's best case on CPUs) and a
2048^3 matrix product as the model's linear layers compute it
(:func:`mmdet_cdetr.ops.linear`), in float32 and in bf16. FLOP counts are 2 per
multiply-add. The peak of a precision is the faster of the two: a model's
achieved GFLOP/s over it says how far the model is from the machine's limit.
"""
import platform
from typing import Callable, Dict, Tuple, TypeVar

import torch
import torch.nn.functional as F

from mmdet_cdetr.ops import linear
from mmdet_cdetr.ops.processor_info import cpuinfo_fields
from .benchmark import _timed

Result = TypeVar('Result')

_CONV_SHAPE = (1, 256, 64, 64)  # batch, channels, height, width
_GEMM_SIZE = 2048


def _timed_gflops(fn, flops: float, device: torch.device,
                  repeats: int) -> float:
    """GFLOP/s of ``fn``'s best of ``repeats`` calls, after a warm-up call
    (oneDNN builds its kernels on the first)."""
    fn()
    best = min(_timed(fn, device) for _ in range(repeats))
    return flops / best / 1e9


def measure_peaks(device: torch.device, repeats: int = 5) -> Dict[str, float]:
    """GFLOP/s of the convolution and the matrix product in float32 and
    bf16, and each precision's peak (``float32``, ``bfloat16``)."""
    generator = torch.Generator().manual_seed(0)
    batch, channels, height, width = _CONV_SHAPE
    conv_flops = 2 * channels * channels * 9 * height * width * batch
    gemm_flops = 2 * _GEMM_SIZE**3
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).split('.')[-1]
        image = torch.randn(
            _CONV_SHAPE, generator=generator).to(
                device, dtype).contiguous(memory_format=torch.channels_last)
        kernel = torch.randn(
            channels, channels, 3, 3, generator=generator).to(
                device, dtype).contiguous(memory_format=torch.channels_last)
        a, b = (
            torch.randn(_GEMM_SIZE, _GEMM_SIZE,
                        generator=generator).to(device, dtype)
            for _ in range(2))
        with torch.no_grad():
            results[f'{name}_conv'] = _timed_gflops(
                lambda: F.conv2d(image, kernel, padding=1), conv_flops, device,
                repeats)
            results[f'{name}_gemm'] = _timed_gflops(lambda: linear(a, b, None),
                                                    gemm_flops, device,
                                                    repeats)
        results[name] = max(results[f'{name}_conv'], results[f'{name}_gemm'])
    return results


def measure_peaks_around(
        run: Callable[[], Result],
        device: torch.device) -> Tuple[Result, Dict[str, float]]:
    """``run()``'s result, and the peaks measured before and after it, the
    higher of the two kept for each: a load that passes during one
    measurement (another process, the CPU's clock) would otherwise lower
    the peak and raise every fraction of it."""
    before = measure_peaks(device)
    result = run()
    after = measure_peaks(device)
    return result, {key: max(before[key], after[key]) for key in before}


def describe_processor(device: torch.device) -> str:
    """The processor behind the peaks, in one line. Machines of one name
    differ: on 2-core AMD EPYCs this project measured float32 peaks of 413
    (AVX-512), 213 (AVX-512 on family 25 model 17's 256-bit units), 137
    (AVX2) and 79 GFLOP/s (AVX2 on family 23 model 1, whose vector units
    are half as wide), and a model's fraction of the peak moves with it."""
    device = torch.device(device)
    if device.type == 'cuda':
        return f'cuda: {torch.cuda.get_device_name(device)}'
    if device.type != 'cpu':
        return device.type
    fields = cpuinfo_fields(('model name', 'cpu family', 'model'))
    name = fields.get('model name') or platform.processor() or 'unknown'
    family = (f', family {fields["cpu family"]} model {fields["model"]}'
              if 'cpu family' in fields and 'model' in fields else '')
    return (f'cpu: {name}{family}, '
            f'{torch.backends.cpu.get_cpu_capability()}, '
            f'{torch.get_num_threads()} threads')
