"""Speed-ups measured on one kind of device, each decided here, once.

Each function says whether a choice is on for tensors on ``device``. They
return True only where the choice was measured faster (the CPU: see
``docs/performance.md`` for the numbers); everywhere else the code takes the
plain path, as mmdet does. Graphs being traced, exported or compiled always
get the plain path too, so FLOP counts, ONNX files and ``torch.compile`` see
only standard operators. The kernels read these functions; nothing else
branches on the device.
"""
from typing import Union

import torch

from .processor_info import cpu_has_amx_bf16, is_intel_cpu

Device = Union[torch.device, str]


def _is_cpu(device: Device) -> bool:
    return torch.device(device).type == 'cpu'


def _is_cpu_eager(device: Device) -> bool:
    """On the CPU, and not inside a trace, an ONNX export or a compile."""
    return _is_cpu(device) and not (torch.jit.is_tracing()
                                    or torch.onnx.is_in_onnx_export()
                                    or torch.compiler.is_compiling())


def channels_last_backbone(device: Device) -> bool:
    """Run backbone and neck on NHWC tensors (oneDNN's convolutions and
    frozen batch norms are faster so; unmeasured on GPUs)."""
    return _is_cpu(device)


def numpy_dropout_masks(device: Device) -> bool:
    """Draw dropout masks from numpy's PCG64 and materialise the attention
    weights to drop them (PyTorch's CPU dropout and its fused CPU attention
    with dropout are slow; CUDA's fused dropout is not)."""
    return _is_cpu(device)


def pad_value_heads(device: Device) -> bool:
    """Append zero columns to value heads narrower than the query/key heads
    (conditional cross-attention) so that PyTorch's fused CPU attention
    accepts them instead of falling back to its unfused path."""
    return _is_cpu(device)


def materialise_reduced_precision_attention(device: Device) -> bool:
    """Compute bf16/fp16 attention without dropout as ``softmax(q k^T) v``
    with materialised weights instead of PyTorch's fused CPU kernel, on
    CPUs without AMX, where the fused kernel at our head widths (32, 64)
    runs no faster in bf16 than in float32: ``--amp`` inference of R50 went
    419 -> 381 ms. With AMX the fused kernel is faster (encoder
    self-attention 6.69 ms materialised, 2.69 ms fused; docs/performance.md).
    The logits are then rounded to bf16, as in mmdet's attention under
    autocast."""
    return _is_cpu_eager(device) and not cpu_has_amx_bf16()


def onednn_linear(device: Device) -> bool:
    """Compute float32 linear layers with oneDNN's matrix product instead of
    the BLAS that ``F.linear`` calls (MKL), on CPUs with AVX-512 other than
    Intel's. Both accumulate in float32. On an AMD CPU with AVX-512, MKL
    keeps to slower kernels and oneDNN made the R50 model's inference 1.12x
    faster; on one with AVX2 alone, MKL runs its best kernels and oneDNN
    gained nothing; on an Intel CPU with AVX-512 (family 6 model 167) MKL
    runs its best kernels too, and oneDNN made the training step 1284 ->
    1342 ms slower (``docs/performance.md``)."""
    return (_is_cpu_eager(device) and torch.backends.mkldnn.is_available()
            and _cpu_capability() == 'AVX512' and not is_intel_cpu())


def _cpu_capability() -> str:
    """The widest vector instructions PyTorch's CPU kernels use here."""
    return torch.backends.cpu.get_cpu_capability()


def fold_batch_norms(device: Device) -> bool:
    """Fold batch norms that use their running statistics (frozen or in
    eval mode) into the preceding convolution's weights and bias: one pass
    over the activations fewer forward and backward."""
    return _is_cpu_eager(device)


def pack_inference_convolutions(device: Device) -> bool:
    """In inference of a model packed for it
    (:func:`~.packed_convolution.pack_convolutions_for_inference`), run the
    ResNet blocks' convolutions on folded weights reordered for oneDNN once,
    with their ReLUs as oneDNN post-ops, instead of folding, casting and
    reordering the weights on every call: R50 inference at 800x1216 went
    1233 -> 1187 ms in float32 and 675 -> 633 ms under bf16 autocast
    (docs/performance.md). Not measured on GPUs (none was lent)."""
    return _is_cpu_eager(device) and torch.backends.mkldnn.is_available()


def pack_inference_linears(device: Device) -> bool:
    """In bf16 inference (autocast) of a model packed for it
    (:func:`~.packed_linear.pack_linears_for_inference`), run the linear
    layers on weights cast to bf16 and reordered for oneDNN once instead of
    on every call, on CPUs with native bf16: ``--amp`` inference of R50 at
    800x1216 went 634 -> 621 ms (docs/performance.md). In float32 the same
    packing gained 1088 -> 1078 ms, within noise, so float32 layers keep
    :func:`onednn_linear`. Not measured on GPUs (none was lent)."""
    return (_is_cpu_eager(device) and torch.backends.mkldnn.is_available()
            and _cpu_has_bf16())


def fast_autocast(device: Device) -> bool:
    """Whether autocast can beat float32 on ``device``: on accelerators
    (fp16), and on CPUs for which oneDNN reports bf16 support (AVX-512 or
    AMX). CPUs with AVX2 alone emulate bf16: on one, convolutions and matrix
    products measured 7-10x slower than in float32 (docs/performance.md)."""
    return not _is_cpu(device) or _cpu_has_bf16()


def keep_freed_cpu_memory(device: Device) -> bool:
    """Let our command-line tools keep freed memory in the process (glibc's
    malloc without mmap and trimming, :mod:`mmdet_cdetr.utils.freed_memory`)
    when the model runs on the CPU: every training step's activations are
    otherwise fresh pages the kernel zeroes and maps again. R50 float32
    training step of two 800x1088 images 5726 -> 3836 ms, of two 512x512
    1403-1521 -> 1118-1210 ms (docs/performance.md). On GPUs the
    activations are CUDA's cached memory and the host's allocations few."""
    return _is_cpu(device)


def _cpu_has_bf16() -> bool:
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()
