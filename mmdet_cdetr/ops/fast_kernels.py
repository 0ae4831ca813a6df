from torch import nn

from .fast_dropout import use_fast_dropout
from .fast_linear import use_fast_linear
from .folded_batch_norm import fold_batch_norms_into_convs
from .fused_resnet_blocks import fuse_resnet_blocks


def use_fast_kernels(module: nn.Module) -> nn.Module:
    """Route every dropout, linear layer, conv + batch norm pair and ResNet
    block under ``module`` through this package's kernels, in place.
    Parameters, names and state dicts are unchanged, and each kernel decides
    per call, from :mod:`.device_choices`, whether to run or to leave the
    plain path."""
    use_fast_dropout(module)
    use_fast_linear(module)
    fold_batch_norms_into_convs(module)
    fuse_resnet_blocks(module)
    return module
