"""Speed-ups measured on one kind of device, each decided here, once.

Each function says whether a choice is on for tensors on ``device``. They
return True only where the choice was measured faster (the CPU: see
``docs/performance.md`` for the numbers); everywhere else the code takes the
plain path, as mmdet does. The kernels read these functions; nothing else
branches on the device.
"""
from typing import Union

import torch

Device = Union[torch.device, str]


def _is_cpu(device: Device) -> bool:
    return torch.device(device).type == 'cpu'


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
