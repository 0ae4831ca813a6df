"""Batch norms folded into their convolutions at every call
(:mod:`mmdet_cdetr.speedup.folded_batch_norm`): the same outputs and
gradients as mmdet's ResNet with frozen norms, the same state, and the norms'
own behaviour wherever they train."""
import copy

import pytest
import torch
from conftest import randomize_
from mmdet.models.backbones import ResNet
from torch import nn

from mmdet_cdetr.speedup import (ConvFoldingNorm, NormFoldedIntoConv,
                                 fold_batch_norms)


def _resnet(norm_eval: bool = True) -> ResNet:
    """mmdet's ResNet-18 as DETR configs build it (stage 1 frozen), random
    norm statistics, in training mode."""
    torch.manual_seed(0)
    resnet = ResNet(
        18,
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=not norm_eval),
        norm_eval=norm_eval,
        out_indices=(3, ))
    randomize_(resnet)
    resnet.train()
    return resnet


def _folded(resnet: ResNet) -> ResNet:
    folded = copy.deepcopy(resnet)
    assert fold_batch_norms(folded) == 20  # stem, 16 in blocks, 3 downsample
    return folded


def _outputs_and_gradients(resnet: ResNet, x: torch.Tensor):
    out = resnet(x)[0]
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype)
    (out * weights.view_as(out)).sum().backward()
    return out, {
        name: param.grad
        for name, param in resnet.named_parameters() if param.grad is not None
    }


@pytest.mark.parametrize('channels_last', [False, True])
def test_frozen_norms_folded_keep_outputs_gradients_and_state(channels_last):
    plain = _resnet()
    folded = _folded(plain)
    assert folded.state_dict().keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(folded.state_dict()[key], value), key
    pairs = [(m.conv1, m.bn1) for m in folded.layer2]
    assert all(
        type(conv) is ConvFoldingNorm and type(norm) is NormFoldedIntoConv
        and conv.folded_norm[0] is norm for conv, norm in pairs)
    x = torch.randn(2, 3, 96, 128)
    if channels_last:
        for resnet in (plain, folded):
            resnet.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    plain_out, plain_grads = _outputs_and_gradients(plain, x)
    folded_out, folded_grads = _outputs_and_gradients(folded, x)
    torch.testing.assert_close(folded_out, plain_out, rtol=1e-4, atol=1e-4)
    # Stage 1 is frozen, its norms and every norm's parameters too.
    assert folded_grads.keys() == plain_grads.keys()
    assert 'layer1.0.conv1.weight' not in plain_grads
    assert 'layer2.0.bn1.weight' not in plain_grads
    for name, grad in plain_grads.items():
        # Float32 rounding (measured ~1e-6 of the norm); a wrong fold is off
        # by a good part of it.
        assert (folded_grads[name] - grad).norm() < 1e-4 * grad.norm(), name
        assert folded_grads[name].stride() == grad.stride(), name
    # The norm is folded, not applied twice or skipped: alone it passes its
    # input through, and the convolution alone normalises.
    conv, norm = pairs[0]
    probe = torch.randn(1, conv.in_channels, 8, 8)
    assert torch.equal(norm(probe), probe)
    reference = nn.Sequential(
        copy.deepcopy(plain.layer2[0].conv1),
        copy.deepcopy(plain.layer2[0].bn1)).eval()
    torch.testing.assert_close(conv(probe), reference(probe))
    assert not torch.allclose(conv(probe), reference[0](probe), atol=1e-2)


def test_training_norms_stay_norms():
    """Norms in training mode (``norm_eval=False``; the frozen stage's stay
    in eval mode and fold) normalise by the batch and update their
    statistics, as before the fold. In float64: batch statistics of this
    small random network magnify float32 rounding to 1% of a gradient."""
    plain = _resnet(norm_eval=False).double()
    folded = _folded(plain)
    assert folded.layer2[0].bn1.training and not folded.layer1[0].bn1.training
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    plain_out, plain_grads = _outputs_and_gradients(plain, x)
    folded_out, folded_grads = _outputs_and_gradients(folded, x)
    torch.testing.assert_close(folded_out, plain_out)
    assert 'layer2.0.bn1.weight' in folded_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(folded_grads[name], grad, msg=name)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(folded.state_dict()[key], value, msg=key)
    assert not torch.equal(plain.layer2[0].bn1.running_mean,
                           _resnet(norm_eval=False).layer2[0].bn1.running_mean)


def test_fold_follows_changed_parameters_copies_and_input_hooks():
    """The fold is recomputed at each call: it follows weights loaded or
    swapped in place (EMA) and a deep copy's own norm; forward pre-hooks on
    the convolution (the batched ONNX export's masks) still apply."""
    plain = _resnet()
    plain.eval()  # mmdet's ResNet.train returns None
    folded = _folded(plain)
    x = torch.randn(1, 3, 64, 64)
    changed = copy.deepcopy(plain)
    randomize_(changed, seed=1)
    folded.load_state_dict(changed.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(folded(x)[0], changed(x)[0])
        copied = copy.deepcopy(folded)
        assert copied.layer3[0].conv2.folded_norm[0] is copied.layer3[0].bn2
        copied.layer3[0].bn2.running_mean.add_(1)
        assert not torch.allclose(copied(x)[0], folded(x)[0])
        for resnet in (changed, folded):
            resnet.layer2[0].conv2.register_forward_pre_hook(
                lambda module, args: (args[0] * 0, ))
        torch.testing.assert_close(folded(x)[0], changed(x)[0])


def test_only_conv_norm_pairs_are_folded():
    layers = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.BatchNorm2d(4),  # after a ReLU
        nn.Conv2d(4, 4, 3, padding=1, padding_mode='reflect'),
        nn.BatchNorm2d(4),  # after a reflecting convolution
        nn.Conv2d(4, 6, 1),
        nn.BatchNorm2d(6, affine=False),  # nothing to fold into
        nn.Conv2d(6, 6, 1),
        nn.BatchNorm2d(6))
    assert fold_batch_norms(layers) == 1
    assert [type(m).__name__
            for m in layers][-2:] == ['ConvFoldingNorm', 'NormFoldedIntoConv']
    assert fold_batch_norms(layers) == 1
