"""mmdet's ResNet blocks with ReLU and the residual addition fused into
their convolutions, where no gradient is needed.

With the batch norms folded (:mod:`.folded_batch_norm`), a bottleneck is
``relu(conv1 x)``, ``relu(conv2 .)``, ``relu(conv3 . + identity)``. oneDNN
computes each as one convolution with the ReLU (and the addition) applied to
its output tile while it is still in cache; PyTorch's eager ops would make a
pass over the whole activation for each. oneDNN's fused operators have no
backward, so the fused path runs only where nothing needs a gradient
(inference, and a frozen stage in training), and only where
:func:`~.device_choices.fuse_conv_activations` says so; everywhere else the
block is mmdet's. Same parameters and state dict; the outputs equal the
plain block's to float32 rounding (tested).
"""
from typing import Optional

import torch
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
from torch import Tensor, nn

from .device_choices import fuse_conv_activations
from .folded_batch_norm import NormFoldedConv2d, has_forward_hooks


def _fused_conv(conv: nn.Module,
                x: Tensor,
                residual: Optional[Tensor] = None) -> Tensor:
    """``relu(conv(x) [+ residual])`` in one oneDNN call; under autocast in
    its dtype, as ``F.conv2d`` would compute (oneDNN's operators are not on
    autocast's lists)."""
    weight, bias = conv.folded_weight_and_bias(x)
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
        residual = None if residual is None else residual.to(dtype)
    geometry = (list(conv.padding), list(conv.stride), list(conv.dilation),
                conv.groups)
    if residual is None:
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias,
                                                       *geometry, 'relu', [],
                                                       '')
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, residual, weight, bias, *geometry, 'add', None, 'relu', [], '')


def _can_fuse(block: nn.Module, x: Tensor, convs) -> bool:
    """Every convolution plain, zero-padded and folded with its norm, no
    plugin, gradient checkpointing or forward hook (the fused path calls
    neither the convolutions nor the ReLU as modules), and nothing that needs
    a gradient."""
    if block.with_cp or getattr(block, 'with_plugins', False):
        return False
    if has_forward_hooks(block.relu, *convs):
        return False
    if not fuse_conv_activations(x.device):
        return False
    if torch.is_grad_enabled() and (x.requires_grad
                                    or any(p.requires_grad
                                           for p in block.parameters())):
        return False
    return all(
        isinstance(conv, NormFoldedConv2d) and conv.padding_mode == 'zeros'
        and not isinstance(conv.padding, str)
        and conv.folded_weight_and_bias(x) is not None for conv in convs)


class FusedBasicBlock(BasicBlock):
    """mmdet's ``BasicBlock`` with fused convolutions where possible."""

    def forward(self, x: Tensor) -> Tensor:
        if not _can_fuse(self, x, (self.conv1, self.conv2)):
            return super().forward(x)
        identity = x if self.downsample is None else self.downsample(x)
        return _fused_conv(self.conv2, _fused_conv(self.conv1, x), identity)


class FusedBottleneck(Bottleneck):
    """mmdet's ``Bottleneck`` with fused convolutions where possible."""

    def forward(self, x: Tensor) -> Tensor:
        if not _can_fuse(self, x, (self.conv1, self.conv2, self.conv3)):
            return super().forward(x)
        identity = x if self.downsample is None else self.downsample(x)
        out = _fused_conv(self.conv2, _fused_conv(self.conv1, x))
        return _fused_conv(self.conv3, out, identity)


_FUSED_CLASS = {BasicBlock: FusedBasicBlock, Bottleneck: FusedBottleneck}


def fuse_resnet_blocks(module: nn.Module) -> nn.Module:
    """Make every mmdet ``BasicBlock``/``Bottleneck`` under ``module`` its
    fused subclass, in place (call after
    :func:`~.folded_batch_norm.fold_batch_norms_into_convs`, without which
    the blocks keep their own forward)."""
    for child in module.modules():
        if type(child) in _FUSED_CLASS:
            child.__class__ = _FUSED_CLASS[type(child)]
    return module
