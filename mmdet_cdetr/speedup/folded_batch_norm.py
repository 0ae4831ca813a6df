"""Batch norms on running statistics folded into the convolution before
them, at every call, in training as in inference.

A batch norm in eval mode (every norm of our configs' ResNets:
``norm_eval=True``) is a per-channel affine map, so a convolution followed
by it equals one convolution with its weights scaled per output channel,
``s = gamma / sqrt(running_var + eps)``, and a bias
``beta - running_mean * s``. Scaling the weights costs a pass over them at
each call; it saves the norm's pass over the activations, and in training
the norm's backward pass too. The fold is redone at every call from the
current parameters, so it holds while the convolution trains and when a hook
swaps the parameters (MMEngine's ``EMAHook``). Both modules keep their
parameters and buffers (the same tensors), so the state dict, the optimiser
and checkpoints are unchanged. A norm switched to training mode is applied
as usual, by itself.

Forward hooks on a folded convolution's output or on its norm's input see
normalised values; hooks on the convolution's input (as the batched ONNX
export registers) are unaffected.
"""
import torch.nn.functional as F
from torch import Tensor, nn


class NormFoldedIntoConv(nn.BatchNorm2d):
    """A :class:`torch.nn.BatchNorm2d` whose eval-mode transform the
    preceding :class:`ConvFoldingNorm` applies: the identity in eval mode, a
    batch norm in training mode."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) if self.training else x

    @classmethod
    def replacing(cls, norm: nn.BatchNorm2d) -> 'NormFoldedIntoConv':
        """A module that holds ``norm``'s parameters and buffers."""
        new = cls(
            norm.num_features,
            norm.eps,
            norm.momentum,
            norm.affine,
            norm.track_running_stats,
            device='meta')
        for name, value in [
                *norm.named_parameters(recurse=False),
                *norm.named_buffers(recurse=False)
        ]:
            setattr(new, name, value)
        new.train(norm.training)
        return new


class ConvFoldingNorm(nn.Conv2d):
    """A :class:`torch.nn.Conv2d` that applies the eval-mode batch norm after
    it (a :class:`NormFoldedIntoConv`) through its own weights and bias."""

    def forward(self, x: Tensor) -> Tensor:
        norm = self.folded_norm[0]
        if norm.training:
            return super().forward(x)
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
        bias = norm.bias - norm.running_mean * scale
        if self.bias is not None:
            bias = bias + self.bias * scale
        weight = self.weight * scale.reshape(-1, 1, 1, 1)
        return F.conv2d(x, weight, bias, self.stride, self.padding,
                        self.dilation, self.groups)

    @classmethod
    def replacing(cls, conv: nn.Conv2d,
                  norm: NormFoldedIntoConv) -> 'ConvFoldingNorm':
        """A module that holds ``conv``'s parameters and folds ``norm``."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            device='meta')
        new.weight, new.bias = conv.weight, conv.bias
        # A tuple, so that the norm is not registered twice (state dict).
        new.folded_norm = (norm, )
        new.train(conv.training)
        return new


def fold_batch_norms(module: nn.Module) -> int:
    """Replace, in ``module`` and its descendants, each ``nn.Conv2d``
    registered right before the ``nn.BatchNorm2d`` that normalises its
    output (ResNet's ``conv1``/``bn1`` ... and its downsample pairs) with a
    :class:`ConvFoldingNorm` and :class:`NormFoldedIntoConv`; returns how
    many pairs ``module`` then holds folded (a second call changes
    nothing)."""
    _fold_pairs(module)
    return sum(isinstance(m, NormFoldedIntoConv) for m in module.modules())


def _fold_pairs(module: nn.Module) -> None:
    conv_name, conv = None, None
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d and _foldable(conv, child):
            norm = NormFoldedIntoConv.replacing(child)
            setattr(module, conv_name, ConvFoldingNorm.replacing(conv, norm))
            setattr(module, name, norm)
            conv_name, conv = None, None
        elif type(child) is nn.Conv2d:
            conv_name, conv = name, child
        else:
            _fold_pairs(child)
            conv_name, conv = None, None


def _foldable(conv: nn.Module, norm: nn.BatchNorm2d) -> bool:
    return (conv is not None and conv.out_channels == norm.num_features
            and conv.padding_mode == 'zeros' and norm.affine
            and norm.track_running_stats)
