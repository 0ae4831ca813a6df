"""mmdet's ResNet blocks with ReLU and residual addition fused into their
convolutions (mmdet_cdetr.ops.fused_resnet_blocks) against mmdet's own:
inference, a frozen stage in training, and the cases that must keep
mmdet's forward."""
import pytest
import torch
from mmdet.models.backbones import ResNet
from torch import nn
from torch.profiler import ProfilerActivity, profile

from mmdet_cdetr.ops import (fold_batch_norms_into_convs, folded_batch_norm,
                             fuse_conv_activations, fuse_resnet_blocks,
                             fused_resnet_blocks)

pytestmark = pytest.mark.skipif(
    not fuse_conv_activations('cpu'), reason='PyTorch built without oneDNN')


def _resnet(depth: int, **kwargs) -> ResNet:
    torch.manual_seed(0)
    resnet = ResNet(
        depth=depth,
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        **kwargs)
    for module in resnet.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2)
            nn.init.uniform_(module.weight, 0.5, 1.5)
    resnet.to(memory_format=torch.channels_last)
    resnet.eval()  # mmdet's ResNet.train returns None: set the mode here
    return resnet


def _image() -> torch.Tensor:
    return torch.randn(
        1, 3, 96, 80, generator=torch.Generator().manual_seed(1)).contiguous(
            memory_format=torch.channels_last)


def _forward(resnet: ResNet, x: torch.Tensor) -> list:
    """The stages' outputs and, in training mode, the gradients of every
    trainable parameter."""
    outs = resnet(x)
    if not resnet.training:
        return list(outs)
    sum((out * out.detach().sin()).sum() for out in outs).backward()
    grads = [p.grad.clone() for p in resnet.parameters() if p.grad is not None]
    resnet.zero_grad(set_to_none=True)
    return [out.detach() for out in outs] + grads


def _plain(monkeypatch, resnet, x) -> list:
    with monkeypatch.context() as patch:
        off = lambda device: False  # noqa: E731
        patch.setattr(folded_batch_norm, 'fold_batch_norms', off)
        patch.setattr(fused_resnet_blocks, 'fuse_conv_activations', off)
        return _forward(resnet, x)


def _fused_calls(resnet, x) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _forward(resnet, x)
    return sum(
        event.name.startswith('mkldnn::_convolution_pointwise')
        for event in prof.events())


def _fuse(resnet: ResNet) -> ResNet:
    return fuse_resnet_blocks(fold_batch_norms_into_convs(resnet))


@pytest.mark.parametrize('depth,convs', [(18, 16), (50, 48)])
def test_inference_equals_mmdet_blocks(monkeypatch, depth, convs):
    resnet, x = _resnet(depth), _image()
    with torch.no_grad():
        expected = _plain(monkeypatch, resnet, x)
        _fuse(resnet)
        assert _fused_calls(resnet, x) == convs  # every block convolution
        got = _forward(resnet, x)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_training_fuses_only_the_frozen_stage(monkeypatch):
    resnet, x = _resnet(50), _image()
    resnet.train()
    expected = _plain(monkeypatch, resnet, x)
    _fuse(resnet)
    resnet.train()
    # layer1 (frozen, no gradient): 3 blocks of 3 convolutions.
    assert _fused_calls(resnet, x) == 9
    got = _forward(resnet, x)
    assert len(got) == len(expected) > 4
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_blocks_that_cannot_fuse_keep_mmdets_forward(monkeypatch):
    x = _image()
    with_cp = _fuse(_resnet(18, with_cp=True))
    unfolded = fuse_resnet_blocks(_resnet(18))  # norms not folded
    hooked = _fuse(_resnet(18))
    seen = []
    hooked.layer2[0].conv2.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].shape))
    with torch.no_grad():
        for resnet in (with_cp, unfolded, hooked):
            expected = _plain(monkeypatch, resnet, x)
            calls = _fused_calls(resnet, x)
            # the hooked block alone keeps mmdet's forward
            assert calls == (14 if resnet is hooked else 0)
            for a, b in zip(_forward(resnet, x), expected):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert len(seen) == 3  # each of the 3 forwards ran the hook


def test_under_autocast_the_fused_blocks_compute_in_bf16(monkeypatch):
    resnet, x = _resnet(50), _image()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        expected = _plain(monkeypatch, resnet, x)
        _fuse(resnet)
        got = _forward(resnet, x)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype == torch.bfloat16
        # bf16 keeps 8 bits: compare relative to each stage's scale.
        assert (a.float() - b.float()).norm() < 0.02 * b.float().norm()
