"""ResNet convolutions with their weights packed once, for inference.

On the CPU every convolution call hands oneDNN a plain weight that it first
reorders into its blocked layout; with batch norms folded
(:mod:`.folded_batch_norm`) the weight is also scaled, and under autocast
cast, on every call. For inference with fixed weights that is done once
here: each convolution keeps its folded weight cast and reordered by oneDNN
(``mkldnn_reorder_conv2d_weight``) and runs oneDNN's convolution on it with
the ReLU that follows it in a bottleneck applied as a post-op, which saves
one more pass over the activations. Same arithmetic as the plain path: the
outputs are equal (``tests/test_packed_convolution.py``).

The weights are read when first needed and again whenever one of them is
changed (:mod:`.weight_cache`): pack a model whose weights are final, as
``tools/test.py`` does after its checkpoint is loaded. The packed path runs
only in eval mode without gradients, on channels-last inputs, where
:func:`~.device_choices.pack_inference_convolutions` says so; otherwise the
blocks run as mmdet's do.
"""
from typing import Optional, Tuple

import torch
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
from torch import Tensor, nn

from .device_choices import pack_inference_convolutions
from .folded_batch_norm import NormFoldedConv2d, norm_applied_by
from .weight_cache import PreparedWeight, PreparedWeights


class _PackedWeight(PreparedWeight):
    """One convolution's weight and bias, folded, cast to ``dtype`` and
    reordered for oneDNN."""

    def __init__(self, conv: NormFoldedConv2d, x: Tensor, dtype: torch.dtype,
                 weight: Tensor, bias: Tensor) -> None:
        super().__init__(_weight_sources(conv))
        self.weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.to(dtype).contiguous(
                memory_format=torch.channels_last).to_mkldnn(),
            list(conv.padding), list(conv.stride), list(conv.dilation),
            conv.groups, list(x.shape))
        self.bias = bias.to(dtype)


def _weight_sources(conv: NormFoldedConv2d) -> Tuple[Optional[Tensor], ...]:
    """The tensors ``conv``'s folded weight and bias are computed from."""
    parent, name = conv.folded_norm
    norm = getattr(parent, name)
    return (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean,
            norm.running_var)


def packed_convolution(conv: nn.Module, x: Tensor,
                       relu: bool) -> Optional[Tensor]:
    """``conv`` and its folded norm applied to ``x`` (then a ReLU if
    ``relu``) on the packed weights; None where the packed path does not
    apply and the caller runs the modules."""
    dtype = (
        torch.get_autocast_dtype('cpu')
        if torch.is_autocast_enabled('cpu') else x.dtype)
    if (dtype not in (torch.float32, torch.bfloat16)
            or not isinstance(conv, NormFoldedConv2d)
            or conv.padding_mode != 'zeros' or isinstance(conv.padding, str)
            or norm_applied_by(conv, x) is None):
        return None
    cache = conv.__dict__.setdefault('_packed_weights', PreparedWeights())
    packed = cache.get(dtype)
    if packed is None or not packed.is_current(_weight_sources(conv)):
        packed = cache[dtype] = _PackedWeight(conv, x, dtype,
                                              *conv.folded_weight_and_bias(x))
    return torch.ops.mkldnn._convolution_pointwise(
        x.to(dtype), packed.weight, packed.bias, list(conv.padding),
        list(conv.stride), list(conv.dilation), conv.groups,
        'relu' if relu else 'none', [], '')


def _conv_norm(block: nn.Module, index: int, x: Tensor, relu: bool) -> Tensor:
    """``relu(norm_i(conv_i(x)))`` (ReLU if ``relu``) of ``block``,
    packed where it can be."""
    conv = getattr(block, f'conv{index}')
    out = packed_convolution(conv, x, relu)
    if out is None:
        out = getattr(block, f'norm{index}')(conv(x))
        if relu:
            out = block.relu(out)
    return out


class _PackedBlock:
    """Mixed into a ResNet block: the packed path in inference."""

    def forward(self, x: Tensor) -> Tensor:
        # Not channels-last also covers inputs that are not 4-D.
        if (self.training or torch.is_grad_enabled()
                or getattr(self, 'with_plugins', False)
                or not x.is_contiguous(memory_format=torch.channels_last)
                or not pack_inference_convolutions(x.device)):
            return super().forward(x)
        convs = 3 if isinstance(self, Bottleneck) else 2
        out = x
        for index in range(1, convs + 1):
            out = _conv_norm(self, index, out, relu=index < convs)
        return self.relu(out.add_(self._shortcut(x)))

    def _shortcut(self, x: Tensor) -> Tensor:
        """The identity, or the downsampling branch with its convolution
        packed (its norm then passes its input through)."""
        if not isinstance(self.downsample, nn.Sequential):
            return x if self.downsample is None else self.downsample(x)
        for layer in self.downsample:
            out = packed_convolution(layer, x, relu=False)
            x = layer(x) if out is None else out
        return x


class PackedBasicBlock(_PackedBlock, BasicBlock):
    """mmdet's ``BasicBlock`` on packed weights in inference."""


class PackedBottleneck(_PackedBlock, Bottleneck):
    """mmdet's ``Bottleneck`` on packed weights in inference."""


_PACKED_CLASS = {BasicBlock: PackedBasicBlock, Bottleneck: PackedBottleneck}


def pack_convolutions_for_inference(module: nn.Module) -> nn.Module:
    """Let the ResNet blocks under ``module`` whose convolutions fold their
    norms (:func:`~.folded_batch_norm.fold_batch_norms_into_convs`) run on
    packed weights in inference, in place; modules, parameters and state
    dicts are unchanged. For models whose weights are final (see the module
    docstring): testing, demos, benchmarks of inference."""
    for block in module.modules():
        packed_class = _PACKED_CLASS.get(type(block))
        if packed_class is not None and isinstance(block.conv1,
                                                   NormFoldedConv2d):
            block.__class__ = packed_class
    return module
