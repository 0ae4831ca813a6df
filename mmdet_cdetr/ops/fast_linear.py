"""Linear layers through oneDNN's matrix product on the CPU.

``F.linear`` on the CPU calls the BLAS PyTorch was built with (MKL), which on
AMD processors runs float32 products at well under half the speed oneDNN
reaches on the same cores (``docs/performance.md``). PyTorch selects oneDNN
for float32 products only through process-wide precision switches, which on
GPUs and on CPUs with AMX also lower the precision; here oneDNN is called
directly, in float32, for the layers of our model alone. Where
:func:`~.device_choices.onednn_linear` says no, or under autocast (whose
casts only ``F.linear`` gets), ``F.linear`` is used as it is.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.wrappers import Linear as MmcvLinear
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .device_choices import onednn_linear


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """:func:`torch.nn.functional.linear`, through oneDNN where chosen."""
    if (x.dtype != torch.float32 or weight.dtype != torch.float32
            or not x.numel() or not onednn_linear(x.device)
            or torch.is_autocast_enabled(x.device.type)):
        return F.linear(x, weight, bias)
    # On rows, so that the Function's output is not a view (in-place ops on
    # it, as ReLU(inplace=True), would be refused).
    rows = _OneDnnLinear.apply(x.reshape(-1, x.size(-1)), weight, bias)
    return rows.view(*x.shape[:-1], rows.size(-1))


def _product(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``x @ weight.T + bias`` by oneDNN (any strides, bias fused)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], '')


class _OneDnnLinear(torch.autograd.Function):
    """Forward and both weight and input gradients as oneDNN products, of
    (rows, in_features) inputs."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor,
                bias: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _product(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        grad_x = _product(grad, weight.t(), None) if needs_x else None
        grad_weight = _product(grad.t(), x.t(), None) if needs_weight else None
        grad_bias = grad.sum(0) if ctx.has_bias and needs_bias else None
        return grad_x, grad_weight, grad_bias


_PLAIN_LINEARS = (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear,
                  MmcvLinear)


class Linear(nn.Linear):
    """:class:`torch.nn.Linear` computed by :func:`linear`; same parameters
    and state dict."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


def use_fast_linear(module: nn.Module) -> nn.Module:
    """Make every plain :class:`torch.nn.Linear` under ``module`` a
    :class:`Linear`, in place: parameters, hooks and names are kept. Plain
    ones by other names count too: ``nn.MultiheadAttention``'s output
    projection, and mmcv's ``Linear`` of FFNs (it differs only on torch
    older than 1.5). Other subclasses keep their own forward."""
    for child in module.modules():
        if type(child) in _PLAIN_LINEARS:
            child.__class__ = Linear
    return module
