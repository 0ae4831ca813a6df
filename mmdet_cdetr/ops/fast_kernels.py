from mmdet.models.backbones import ResNet
from torch import nn

from .fast_dropout import use_fast_dropout
from .fast_linear import use_fast_linear
from .folded_batch_norm import fold_batch_norms_into_convs
from .packed_convolution import pack_convolutions_for_inference
from .packed_linear import pack_linears_for_inference
from .view_safe_relu import use_view_safe_relu


def use_fast_kernels(module: nn.Module) -> nn.Module:
    """Route every dropout, linear layer and ReLU under ``module``, and the
    conv + batch norm pairs of its mmdet ResNets (ResNetV1d, ResNeXt, ...
    included), through this package's kernels, in place. Parameters, names
    and state dicts are unchanged, and each kernel decides per call, from
    :mod:`.device_choices`, whether to run or to leave the plain path.

    Batch norms are folded only inside ResNets, whose forward applies each
    norm to the output of the convolution registered just before it (the
    pairing :func:`fold_batch_norms_into_convs` relies on); other backbones
    keep their norms."""
    use_fast_dropout(module)
    use_fast_linear(module)
    use_view_safe_relu(module)
    for resnet in [m for m in module.modules() if isinstance(m, ResNet)]:
        fold_batch_norms_into_convs(resnet)
    return module


def pack_for_inference(module: nn.Module) -> nn.Module:
    """Let the kernels :func:`use_fast_kernels` routed under ``module`` keep
    their weights prepared between calls in inference (the ResNet blocks'
    convolutions, and the linear layers under bf16 autocast), in place. For
    models whose weights are final: testing, demos, benchmarks of
    inference."""
    pack_convolutions_for_inference(module)
    return pack_linears_for_inference(module)
