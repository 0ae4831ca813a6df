"""ReLU that stays in place only where that saves work in training.

A linear layer with a bias on a 3-D or 4-D input returns a view of its 2-D
product (``F.linear`` flattens the leading dimensions). mmdet's FFNs, the
encoder's, the decoder's and the head's, follow one with
``ReLU(inplace=True)``. An in-place op on a view that autograd records
makes the backward clone the whole base gradient and copy the slice back
(``CopySlices``): two more passes over the FFN's widest activation for
nothing. Out of place, the ReLU writes one new tensor and the linear's
output is freed at once (nothing saves it), so peak memory does not grow.
The R50 float32 training step at 2x512x512 went 1643 -> 1617 ms
(docs/performance.md). The rule is autograd's, not a device's, so it holds
on every device.
"""
import torch.nn.functional as F
from torch import Tensor, nn


class ViewSafeReLU(nn.ReLU):
    """:class:`torch.nn.ReLU` that computes out of place when in place would
    modify a view autograd records; in place otherwise, as configured."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace and x.requires_grad and x._base is not None:
            return F.relu(x)
        return super().forward(x)


def use_view_safe_relu(module: nn.Module) -> nn.Module:
    """Make every plain :class:`torch.nn.ReLU` under ``module`` a
    :class:`ViewSafeReLU`, in place (no parameters: state dicts do not
    change)."""
    for child in module.modules():
        if type(child) is nn.ReLU:
            child.__class__ = ViewSafeReLU
    return module
