from contextlib import contextmanager
from typing import Iterator

import torch
from mmengine.optim import OptimWrapper
from torch import nn

from mmdet_cdetr.registry import OPTIM_WRAPPERS
from mmdet_cdetr.utils import warn_if_autocast_is_slow


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """Mixed-precision training in bfloat16 autocast, on any device,
    without a loss scaler.

    mmengine's ``AmpOptimWrapper`` refuses to run without a GPU (it is
    built around CUDA's fp16 loss scaler). bf16 has float32's exponent
    range, so its gradients neither underflow nor need scaling: the forward
    pass runs under ``torch.autocast(dtype=torch.bfloat16)`` on the device
    of the model's parameters, and the step is :class:`OptimWrapper`'s. On
    CPUs with AVX512-BF16 or AMX this is what ``tools/train.py --amp``
    selects; on GPUs ``--amp`` keeps mmengine's ``AmpOptimWrapper``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._speed_checked = False

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        device_type = next(model.parameters()).device.type
        if not self._speed_checked:
            warn_if_autocast_is_slow(device_type)
            self._speed_checked = True
        with super().optim_context(model), torch.autocast(
                device_type, dtype=torch.bfloat16):
            yield
