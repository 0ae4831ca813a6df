"""Linear layers with their bf16 weights packed once, for inference.

Under autocast every call of a linear layer casts its float32 weight to
bf16, and oneDNN reorders it into a blocked layout, before the product. For
inference with fixed weights, each :class:`PackedLinear` keeps its weight
cast and reordered (``_reorder_linear_weight``) and runs oneDNN's product on
it: the same product as autocast's (bf16 inputs and weights, float32
accumulation, a bf16 output), so the outputs are those of the plain layer
(``tests/test_packed_linear.py``). The weights are prepared again when they
change (:mod:`.weight_cache`). The packed path runs only in eval mode
without gradients, under bf16 autocast, where
:func:`~.device_choices.pack_inference_linears` says so; otherwise the
layer is :class:`~.fast_linear.Linear`.
"""
import torch
from torch import Tensor, nn

from .device_choices import pack_inference_linears
from .fast_linear import Linear
from .weight_cache import PreparedWeight, PreparedWeights


class _PackedLinearWeight(PreparedWeight):
    """One layer's weight and bias cast to bf16, the weight reordered for
    oneDNN (for products of about ``rows`` rows; any count works)."""

    def __init__(self, layer: nn.Linear, rows: int) -> None:
        super().__init__((layer.weight, layer.bias))
        self.weight = torch.ops.mkldnn._reorder_linear_weight(
            layer.weight.detach().to(torch.bfloat16), rows)
        self.bias = None if layer.bias is None else layer.bias.detach().to(
            torch.bfloat16)


class PackedLinear(Linear):
    """:class:`~.fast_linear.Linear` on packed bf16 weights in inference
    under autocast; same parameters and state dict."""

    def forward(self, x: Tensor) -> Tensor:
        device = x.device.type
        if (self.training or torch.is_grad_enabled() or not x.numel()
                or not torch.is_autocast_enabled(device)
                or torch.get_autocast_dtype(device) != torch.bfloat16
                or self.weight.dtype != torch.float32
                or not pack_inference_linears(x.device)):
            return super().forward(x)
        rows = x.reshape(-1, x.size(-1))
        cache = self.__dict__.setdefault('_packed_weights', PreparedWeights())
        packed = cache.get(torch.bfloat16)
        if packed is None or not packed.is_current((self.weight, self.bias)):
            packed = cache[torch.bfloat16] = _PackedLinearWeight(
                self, rows.size(0))
        out = torch.ops.mkldnn._linear_pointwise(
            rows.to(torch.bfloat16), packed.weight, packed.bias, 'none', [],
            '')
        return out.view(*x.shape[:-1], out.size(-1))


def pack_linears_for_inference(module: nn.Module) -> nn.Module:
    """Let every :class:`~.fast_linear.Linear` under ``module`` (the plain
    linear layers :func:`~.fast_kernels.use_fast_kernels` routed) run on
    packed weights in bf16 inference, in place; modules, parameters and
    state dicts are unchanged. For models whose weights are final."""
    for layer in module.modules():
        if type(layer) is Linear:
            layer.__class__ = PackedLinear
    return module
