"""Batch norms folded into their convolutions (mmdet_cdetr.ops
.folded_batch_norm) against conv + batch norm: forward and gradients of a
norm on running statistics, a norm in training mode left as it is, and
mmdet's ResNet (frozen, as our configs train it) unchanged."""
import pytest
import torch
from conftest import build_quick_model
from mmdet.models.backbones import ResNet
from torch import nn
from torch.profiler import ProfilerActivity, profile

from mmdet_cdetr.ops import (Linear, fold_batch_norms_into_convs,
                             folded_batch_norm, use_fast_kernels)
from mmdet_cdetr.ops.folded_batch_norm import NormFoldedConv2d


def _conv_bn(conv_bias: bool, affine: bool) -> nn.Sequential:
    torch.manual_seed(0)
    block = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=conv_bias),
        nn.BatchNorm2d(8, affine=affine), nn.ReLU())
    norm = block[1]
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    if affine:
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.uniform_(norm.bias, -0.5, 0.5)
    return block


def _run(block: nn.Module, x: torch.Tensor) -> list:
    x = x.detach().requires_grad_()
    out = block(x)
    out = out[-1] if isinstance(out, tuple) else out  # ResNet: its stages
    (out *
     torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    grads = [x.grad] + [
        p.grad.clone() for p in block.parameters() if p.grad is not None
    ]
    block.zero_grad(set_to_none=True)
    return [out.detach()] + grads


def _plain(monkeypatch, block, x):
    with monkeypatch.context() as patch:
        patch.setattr(folded_batch_norm, 'fold_batch_norms',
                      lambda device: False)
        return _run(block, x)


def _batch_norms_run(block, x) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        block(x)
    return sum(event.name == 'aten::native_batch_norm'
               for event in prof.events())


@pytest.mark.parametrize('conv_bias,affine', [(False, True), (True, True),
                                              (False, False)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_folded_equals_conv_then_norm_in_eval_mode(monkeypatch, conv_bias,
                                                   affine, channels_last):
    block = _conv_bn(conv_bias, affine).eval()
    x = torch.randn(2, 3, 9, 11)
    if channels_last:
        block.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    expected = _plain(monkeypatch, block, x)
    fold_batch_norms_into_convs(block)
    assert isinstance(block[0], NormFoldedConv2d)
    assert _batch_norms_run(block, x) == 0
    got = _run(block, x)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_norm_in_training_mode_is_not_folded(monkeypatch):
    plain = _conv_bn(True, True).train()
    folded = fold_batch_norms_into_convs(_conv_bn(True, True).train())
    x = torch.randn(2, 3, 9, 11)
    assert _batch_norms_run(folded, x) == _batch_norms_run(plain, x) == 1
    for a, b in zip(_run(folded, x), _run(plain, x)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(folded[1].running_mean, plain[1].running_mean)


def test_a_replaced_norm_is_no_longer_folded():
    block = fold_batch_norms_into_convs(_conv_bn(False, True)).eval()
    block[1] = nn.Identity()
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(
        block(x),
        nn.functional.relu(
            nn.functional.conv2d(x, block[0].weight, padding=1)))


@pytest.mark.parametrize('change', ['replace conv', 'hook conv', 'hook norm'])
def test_norm_is_applied_once_when_its_conv_does_not_fold(monkeypatch, change):
    block = _conv_bn(False, True).eval()
    x = torch.randn(1, 3, 5, 5)
    expected = block(x)
    fold_batch_norms_into_convs(block)
    seen = []
    if change == 'replace conv':
        conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        conv.weight = block[0].weight
        block[0] = conv
    else:
        module = block[0] if change == 'hook conv' else block[1]
        module.register_forward_hook(lambda *args: seen.append(1))
    assert _batch_norms_run(block, x) == 1
    torch.testing.assert_close(block(x), expected)
    assert len(seen) == (0 if change == 'replace conv' else 2)


def test_frozen_resnet_is_unchanged_and_keeps_its_state_dict(monkeypatch):
    torch.manual_seed(0)
    resnet = ResNet(
        depth=18,
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True)
    resnet.train()  # mmdet's ResNet.train returns None
    for module in resnet.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 3, 64, 64)
    keys = list(resnet.state_dict())
    expected = _plain(monkeypatch, resnet, x)
    fold_batch_norms_into_convs(resnet)
    assert list(resnet.state_dict()) == keys
    folded = sum(isinstance(m, NormFoldedConv2d) for m in resnet.modules())
    assert folded == 20  # stem, 2 per basic block, 3 downsamples
    assert _batch_norms_run(resnet, x) == 0
    got = _run(resnet, x)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_detector_folds_only_its_resnet():
    model = build_quick_model()
    backbone_convs = [
        m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)
    ]
    assert backbone_convs and all(
        isinstance(m, NormFoldedConv2d) for m in backbone_convs)
    assert not any(
        isinstance(m, NormFoldedConv2d) for m in model.neck.modules())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is Linear for m in linears)
    # Outside a ResNet a conv + norm pair keeps its norm.
    other = use_fast_kernels(_conv_bn(False, True))
    assert type(other[0]) is nn.Conv2d and type(other[1]) is nn.BatchNorm2d
