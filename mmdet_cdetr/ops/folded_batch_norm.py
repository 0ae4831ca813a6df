"""Batch norms on running statistics folded into their convolutions.

A batch norm that normalises with its running statistics (a frozen
backbone's, or any in eval mode) is an affine map per channel, so
``bn(conv(x))`` equals one convolution with the weights scaled by
``gamma / sqrt(var + eps)`` and a bias of ``beta - mean * that scale``.
Unlike mmcv's ``fuse_conv_bn``, which rewrites the weights once for
inference, the fold here is recomputed on each call from the unchanged
parameters: state dicts, checkpoints and training (gradients reach the
convolution's weights and the norm's affine parameters through the scale)
are as without it, and a norm in training mode is applied as usual. On a
ResNet this saves a pass over every activation, and its backward pass.
Where :func:`~.device_choices.fold_batch_norms` says no, both run as usual.
"""
from typing import Optional, Tuple

from torch import Tensor, nn

from .device_choices import fold_batch_norms


class _FoldedNorm:
    """Mixed into a batch norm whose preceding convolution (the sibling
    module named in ``folded_conv``) may apply it."""

    folded_conv: Tuple[nn.Module, str]  # (parent, name of the convolution)

    def forward(self, x: Tensor) -> Tensor:
        parent, name = self.folded_conv
        if norm_applied_by(getattr(parent, name, None), x) is self:
            return x
        return super().forward(x)


class FoldedBatchNorm2d(_FoldedNorm, nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d`, applied by its convolution when it
    uses running statistics."""


class FoldedSyncBatchNorm(_FoldedNorm, nn.SyncBatchNorm):
    """:class:`torch.nn.SyncBatchNorm`, applied by its convolution when it
    uses running statistics."""


_FOLDED_CLASS = {
    nn.BatchNorm2d: FoldedBatchNorm2d,
    nn.SyncBatchNorm: FoldedSyncBatchNorm
}


class NormFoldedConv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` that applies the batch norm after it (the
    sibling module named in ``folded_norm``) when that norm uses running
    statistics."""

    folded_norm: Tuple[nn.Module, str]  # (parent, name of the norm)

    def forward(self, x: Tensor) -> Tensor:
        folded = self.folded_weight_and_bias(x)
        if folded is None:
            return super().forward(x)
        return self._conv_forward(x, *folded)

    def folded_weight_and_bias(
            self, x: Tensor) -> Optional[Tuple[Tensor, Optional[Tensor]]]:
        """The weight and bias of this convolution with its norm folded in,
        for input ``x``; None when the norm is to be applied on its own."""
        norm = norm_applied_by(self, x)
        if norm is None:
            return None
        scale = norm.running_var.add(norm.eps).rsqrt()
        shift = -norm.running_mean * scale
        if norm.weight is not None:
            scale = scale * norm.weight
            shift = shift * norm.weight + norm.bias
        if self.bias is not None:
            shift = shift + self.bias * scale
        return self.weight * scale[:, None, None, None], shift


def norm_applied_by(conv: Optional[nn.Module],
                    x: Tensor) -> Optional[nn.Module]:
    """The norm that ``conv`` applies to its output for input ``x``, if any:
    one decision, read by both the convolution and the norm."""
    if not isinstance(conv, NormFoldedConv2d):
        return None
    parent, name = conv.folded_norm
    norm = getattr(parent, name, None)
    if (not isinstance(norm, _FoldedNorm) or norm.training
            or _has_forward_hooks(conv, norm)
            or not fold_batch_norms(x.device)):
        return None
    return norm


def _has_forward_hooks(*modules: nn.Module) -> bool:
    """Whether calling ``modules`` runs forward (pre-)hooks, theirs or
    global ones. Folding must then leave the pair as it is: the hooks expect
    each module's own input and output (the batched ONNX export masks every
    convolution's input that way)."""
    if nn.modules.module._global_forward_hooks or (
            nn.modules.module._global_forward_pre_hooks):
        return True
    return any(module._forward_hooks or module._forward_pre_hooks
               for module in modules)


def fold_batch_norms_into_convs(module: nn.Module) -> nn.Module:
    """Pair every plain ``nn.Conv2d`` with the ``BatchNorm2d`` or
    ``SyncBatchNorm`` registered right after it in the same parent module
    (mmdet's ResNet registers each norm after its convolution, as mmcv's
    ``fuse_conv_bn`` also assumes) and make them fold, in place. Modules,
    parameters and names are kept; a convolution or norm that is later
    replaced (e.g. by a conversion to SyncBN), or given a forward hook, is
    simply no longer folded."""
    for parent in module.modules():
        previous, previous_name = None, None
        for name, child in parent.named_children():
            if (type(child) in _FOLDED_CLASS and type(previous) is nn.Conv2d
                    and previous.out_channels == child.num_features):
                child.__class__ = _FOLDED_CLASS[type(child)]
                previous.__class__ = NormFoldedConv2d
                # Tuples, so that the parent is not registered as a child.
                previous.folded_norm = (parent, name)
                child.folded_conv = (parent, previous_name)
            previous, previous_name = child, name
    return module
