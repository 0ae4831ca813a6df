"""The CPU dropout is a dropout (rate, scale, gradient, reproducibility),
attention with it equals the written-out formula, and the detector uses it
everywhere in its transformer."""
import pytest
import torch
import torch.nn.functional as F
from conftest import build_quick_model
from torch import nn

from mmdet_cdetr.ops import (Dropout, attention_weights, dropout, fast_dropout,
                             keep_mask, multi_head_attention, use_fast_dropout)
from mmdet_cdetr.ops.fast_dropout import KeptTimesScale

NUMEL = 1_000_000
# Six standard deviations of the dropped fraction of NUMEL elements.
RATE_TOLERANCE = 6 * (0.1 * 0.9 / NUMEL)**0.5


def test_dropout_rate_scale_and_gradient():
    x = torch.ones(NUMEL, requires_grad=True)
    out = dropout(x, 0.1)
    dropped = out == 0
    assert abs(dropped.float().mean().item() - 0.1) < RATE_TOLERANCE
    kept = out[~dropped]
    assert torch.all(kept == torch.tensor(1 / 0.9))
    out.sum().backward()
    # d(out)/dx is the scaled mask, which for x = 1 is out itself.
    torch.testing.assert_close(x.grad, out.detach(), rtol=0, atol=0)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('scale', [1., 1 / 0.9])
def test_kept_times_scale_is_the_product_and_holds_only_the_mask(dtype, scale):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 7, generator=generator).to(dtype).requires_grad_()
    keep = (torch.rand(3, 5, 7, generator=generator) > 0.3).to(torch.uint8)
    grad = torch.randn(3, 5, 7, generator=generator).to(dtype)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = KeptTimesScale.apply(x, keep, scale)
    out.backward(grad)
    mask = keep.to(dtype) * torch.tensor(scale, dtype=dtype)
    assert out.dtype == dtype
    assert torch.equal(out, x.detach() * mask)
    assert torch.equal(x.grad, grad * mask)
    # One byte per element until the backward, not a cast mask.
    assert [t.dtype for t in saved] == [torch.uint8]


def test_keep_mask_rate_and_no_repeats():
    mask = keep_mask((2, NUMEL // 2), 0.3)
    assert mask.dtype == torch.uint8
    assert mask.max() == 1
    assert abs(mask.float().mean().item() - 0.7) < 6 * (0.21 / NUMEL)**0.5
    # Consecutive draws (and the two rows) are different streams.
    assert not torch.equal(mask[0], mask[1])
    assert not torch.equal(mask, keep_mask((2, NUMEL // 2), 0.3))


def test_keep_mask_resolves_rates_finer_than_its_first_byte():
    # 25.5 / 256: deciding on the first 8 random bits alone would drop
    # 25 / 256 or 26 / 256 of the elements, 13 standard deviations away.
    numel, p = 4 * NUMEL, 25.5 / 256
    dropped = 1 - keep_mask((numel, ), p).float().mean().item()
    assert abs(dropped - p) < 6 * (p * (1 - p) / numel)**0.5


def test_dropout_follows_torch_manual_seed():
    x = torch.randn(1000)
    torch.manual_seed(5)
    first = dropout(x, 0.5)
    torch.manual_seed(5)
    again = dropout(x, 0.5)
    assert torch.equal(first, again)
    assert not torch.equal(first, dropout(x, 0.5))


def test_dropout_edge_cases():
    x = torch.randn(100, 10)
    assert dropout(x, 0.1, training=False) is x
    assert torch.equal(dropout(x, 0.), x)
    assert torch.equal(dropout(x, 1.), torch.zeros_like(x))
    half = dropout(x.bfloat16(), 0.2)
    assert half.dtype == torch.bfloat16
    with pytest.raises(ValueError, match='dropout probability'):
        dropout(x, -0.1)


def test_other_devices_use_torch_dropout(monkeypatch):

    def no_cpu_mask(shape, p):
        raise AssertionError('the CPU mask was drawn for a non-CPU tensor')

    monkeypatch.setattr(fast_dropout, 'keep_mask', no_cpu_mask)
    x = torch.empty(4, 5, device='meta')
    assert dropout(x, 0.1).shape == (4, 5)
    with pytest.raises(AssertionError, match='CPU mask'):
        dropout(torch.ones(4, 5), 0.1)


def test_attention_with_dropout_is_the_formula():
    generator = torch.Generator().manual_seed(2)
    q, k = (
        torch.randn(2, 4, 7, 16, generator=generator).requires_grad_()
        for _ in range(2))
    k = k[:, :, :6]
    v = torch.randn(2, 4, 6, 8, generator=generator).requires_grad_()
    blocked = torch.zeros(2, 1, 1, 6, dtype=torch.bool)
    blocked[1, ..., 4:] = True
    torch.manual_seed(7)
    out = multi_head_attention(q, k, v, blocked, 0.25)
    torch.manual_seed(7)
    mask = keep_mask((2, 4, 7, 6), 0.25)
    logits = q @ k.transpose(-2, -1) / 4
    weights = logits.masked_fill(blocked, float('-inf')).softmax(-1)
    expected = (weights * mask / 0.75) @ v
    expected = expected.transpose(1, 2).flatten(2)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.sum(), (q, k, v))
    for grad, reference in zip(grads, expected_grads):
        torch.testing.assert_close(grad, reference, rtol=1e-5, atol=1e-6)
    # Padded keys get no weight, so their values get no gradient.
    assert grads[2][1, :, 4:].abs().max() == 0
    torch.testing.assert_close(
        attention_weights(q, k, blocked), weights, rtol=0, atol=1e-6)


def test_detector_transformer_uses_fast_dropout_only():
    model = build_quick_model()
    for part in (model.encoder, model.decoder):
        dropouts = [m for m in part.modules() if isinstance(m, nn.Dropout)]
        assert dropouts and all(type(m) is Dropout for m in dropouts)
        assert 0.1 in {m.p for m in dropouts}


def test_use_fast_dropout_keeps_probabilities_and_state():
    module = nn.Sequential(
        nn.Linear(4, 4), nn.Dropout(0.3),
        nn.Sequential(nn.ReLU(), nn.Dropout(0.2)))
    state = module.state_dict()
    use_fast_dropout(module)
    assert [type(m) for m in module.modules()].count(Dropout) == 2
    assert (module[1].p, module[2][1].p) == (0.3, 0.2)
    assert module.state_dict().keys() == state.keys()
    module.eval()
    x = torch.randn(3, 4)
    torch.testing.assert_close(module(x), F.relu(module[0](x)))
