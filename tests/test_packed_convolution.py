"""ResNet blocks on packed weights (mmdet_cdetr.ops.packed_convolution)
against the same blocks run as mmdet's: float32 and bf16 autocast, the
paths it must leave alone (training, gradients, tracing), weights changed
after packing, and copies of a packed model."""
import copy
import io

import pytest
import torch
from conftest import build_quick_model
from mmdet.models.backbones import ResNet
from torch import nn

from mmdet_cdetr.ops import pack_convolutions_for_inference, use_fast_kernels
from mmdet_cdetr.ops.packed_convolution import (PackedBasicBlock,
                                                PackedBottleneck)


def _resnet(depth: int) -> nn.Module:
    """A random-weight ResNet as our configs build it (frozen norms),
    with norm statistics far from the identity, channels-last."""
    torch.manual_seed(0)
    net = ResNet(
        depth,
        out_indices=(1, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True)
    for norm in net.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
            nn.init.uniform_(norm.weight, 0.5, 1.5)
            nn.init.uniform_(norm.bias, -0.5, 0.5)
    use_fast_kernels(net)
    net.eval()  # mmdet's ResNet.train() returns None
    return net.to(memory_format=torch.channels_last)


def _image() -> torch.Tensor:
    return torch.randn(
        1, 3, 72, 100, generator=torch.Generator().manual_seed(1)).contiguous(
            memory_format=torch.channels_last)


def _infer(net: nn.Module, amp: bool = False) -> list:
    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16, enabled=amp):
        return list(net(_image()))


def _packed_convs(net: nn.Module) -> int:
    return sum(
        bool(getattr(m, '_packed_weights', None)) for m in net.modules())


@pytest.mark.parametrize('depth,block', [(18, PackedBasicBlock),
                                         (50, PackedBottleneck)])
@pytest.mark.parametrize('amp', [False, True])
def test_packed_blocks_equal_plain_blocks(depth, block, amp):
    plain = _resnet(depth)
    expected = _infer(plain, amp)
    packed = pack_convolutions_for_inference(_resnet(depth))
    assert all(
        type(m) is block for m in packed.modules()
        if isinstance(m, (PackedBasicBlock, PackedBottleneck)))
    got = _infer(packed, amp)
    # Every block convolution and every downsampling one, but not the stem.
    convs = sum(isinstance(m, nn.Conv2d) for m in packed.modules())
    assert _packed_convs(packed) == convs - 1
    for out, ref in zip(got, expected):
        assert out.dtype == ref.dtype
        assert out.is_contiguous(memory_format=torch.channels_last)
        tolerance = 1e-2 if amp else 1e-5
        torch.testing.assert_close(
            out.float(), ref.float(), rtol=tolerance, atol=tolerance)


def test_training_and_gradients_take_mmdet_path():
    net = pack_convolutions_for_inference(_resnet(18))
    x = _image().requires_grad_()
    out = net(x)[-1]  # eval mode, gradients on
    assert out.requires_grad and _packed_convs(net) == 0
    net.train()  # the frozen first stage stays in eval mode
    with torch.no_grad():
        net(_image())
    frozen_convs = sum(isinstance(m, nn.Conv2d) for m in net.layer1.modules())
    assert _packed_convs(net.layer1) == frozen_convs == _packed_convs(net)


def test_weights_changed_after_packing_are_used():
    """load_state_dict (and optimiser steps) change the weights in place:
    the packed weights follow them."""
    net = pack_convolutions_for_inference(_resnet(50))
    before = _infer(net)
    generator = torch.Generator().manual_seed(4)
    changed = {
        name:
        value + 0.05 * value.abs().mean() *
        torch.randn(value.shape, generator=generator).to(
            memory_format=torch.preserve_format)
        if value.is_floating_point() else value
        for name, value in net.state_dict().items()
    }
    reference = _resnet(50)
    reference.load_state_dict(changed)
    net.load_state_dict(changed)
    for out, ref, old in zip(_infer(net), _infer(reference), before):
        assert (ref - old).abs().max() > 0.1 * ref.abs().max()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_copies_of_a_packed_model_pack_again():
    net = pack_convolutions_for_inference(_resnet(18))
    expected = _infer(net)
    assert set(net.state_dict()) == set(_resnet(18).state_dict())
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    for copied in (copy.deepcopy(net), torch.load(buffer, weights_only=False)):
        assert _packed_convs(copied) == 0
        for out, ref in zip(_infer(copied), expected):
            torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_traced_graph_has_only_standard_operators():
    net = pack_convolutions_for_inference(_resnet(18))
    with torch.no_grad():
        graph = str(torch.jit.trace(net, _image()).inlined_graph)
    assert 'aten::_convolution' in graph and 'mkldnn' not in graph


def test_packed_detector_predicts_as_before():
    """Our detector's features and predictions are unchanged by packing."""
    model = build_quick_model().eval()
    image = torch.randn(
        1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model.extract_feat(image)
        pack_convolutions_for_inference(model)
        got = model.extract_feat(image)
    assert _packed_convs(model) > 0
    for out, ref in zip(got, expected):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
