"""Linear layers on packed bf16 weights (mmdet_cdetr.ops.packed_linear)
against the plain layers under bf16 autocast: 2-D and 3-D inputs of other
row counts than the one packed for, the paths it must leave alone (float32,
training, gradients, tracing), weights changed after packing, copies of a
packed model, and our detector's predictions."""
import copy
import io

import pytest
import torch
from conftest import build_quick_model, parity_batch
from torch import nn

from mmdet_cdetr.ops import (Linear, PackedLinear, pack_for_inference,
                             pack_inference_linears,
                             pack_linears_for_inference, use_fast_kernels)

needs_packing = pytest.mark.skipif(
    not pack_inference_linears('cpu'),
    reason='this CPU has no native bf16: linear layers are not packed')


def _layers(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(24, 40, bias=bias), nn.ReLU(), nn.Linear(40, 8, bias=bias))
    return use_fast_kernels(net).eval()


def _inputs(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def _run(net: nn.Module, x: torch.Tensor, amp: bool = True) -> torch.Tensor:
    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16, enabled=amp):
        return net(x)


def _packed(net: nn.Module) -> int:
    return sum(
        bool(getattr(m, '_packed_weights', None)) for m in net.modules())


@needs_packing
@pytest.mark.parametrize('bias', [True, False])
def test_packed_layers_equal_plain_layers_under_bf16(bias):
    plain, packed = _layers(bias), pack_linears_for_inference(_layers(bias))
    assert [type(m) for m in packed
            if isinstance(m, nn.Linear)] == [PackedLinear, PackedLinear]
    # Packed for 7 rows, then run on other counts and on 3-D inputs.
    for shape in ((7, 24), (1, 24), (300, 24), (2, 950, 24), (3, 5, 24)):
        x = _inputs(*shape)
        out, ref = _run(packed, x), _run(plain, x)
        assert out.dtype == ref.dtype == torch.bfloat16
        assert out.shape == ref.shape
        assert ref.abs().max() > 0
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert _packed(packed) == 2


def test_float32_training_and_gradients_take_the_plain_path():
    plain, packed = _layers(), pack_linears_for_inference(_layers())
    x = _inputs(6, 24)
    torch.testing.assert_close(
        _run(packed, x, amp=False), _run(plain, x, amp=False), rtol=0, atol=0)
    with torch.autocast('cpu', torch.bfloat16):
        out = packed(x)  # eval mode, gradients on
    out.float().sum().backward()
    assert packed[0].weight.grad is not None
    packed.train()
    with torch.no_grad():
        _run(packed, x)
    assert _packed(packed) == 0


@needs_packing
def test_weights_changed_after_packing_are_used():
    """load_state_dict (and optimiser steps) change the weights in place:
    the packed weights follow them."""
    net = pack_linears_for_inference(_layers())
    x = _inputs(9, 24)
    before = _run(net, x)
    changed = {
        name:
        value + 0.5 *
        torch.randn(value.shape, generator=torch.Generator().manual_seed(3))
        for name, value in net.state_dict().items()
    }
    net.load_state_dict(changed)
    reference = _layers()
    reference.load_state_dict(changed)
    ref = _run(reference, x)
    assert (ref.float() - before.float()).abs().max() > 0.1
    torch.testing.assert_close(_run(net, x), ref, rtol=0, atol=0)


@needs_packing
def test_copies_of_a_packed_model_pack_again():
    net = pack_linears_for_inference(_layers())
    x = _inputs(5, 24)
    expected = _run(net, x)
    assert _packed(net) == 2
    assert set(net.state_dict()) == set(_layers().state_dict())
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    for copied in (copy.deepcopy(net), torch.load(buffer, weights_only=False)):
        assert _packed(copied) == 0
        torch.testing.assert_close(_run(copied, x), expected, rtol=0, atol=0)


def test_traced_graph_has_only_standard_operators():
    # Frozen: the tracer would record autocast's casts of trainable weights
    # as constants, which it refuses.
    net = pack_linears_for_inference(_layers()).requires_grad_(False)
    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16):
        graph = str(torch.jit.trace(net, _inputs(4, 24)).inlined_graph)
    assert 'aten::linear' in graph and 'mkldnn' not in graph


def test_only_the_routed_plain_layers_are_packed():

    class Custom(nn.Linear):
        pass

    net = use_fast_kernels(nn.Sequential(nn.Linear(4, 4), Custom(4, 4)))
    pack_linears_for_inference(net)
    assert type(net[0]) is PackedLinear and type(net[1]) is Custom
    assert issubclass(PackedLinear, Linear)


@needs_packing
def test_packed_detector_predicts_as_before_under_bf16():
    """Our detector's --amp predictions (two padded images) are unchanged
    by packing."""
    model = build_quick_model().eval()
    inputs, samples = parity_batch(model)

    def predict():
        with torch.no_grad(), torch.autocast('cpu', torch.bfloat16):
            return model.predict(inputs, copy.deepcopy(samples))

    expected = predict()
    pack_for_inference(model)
    got = predict()
    assert _packed(model) > 0
    for ours, reference in zip(got, expected):
        ours, reference = ours.pred_instances, reference.pred_instances
        assert reference.scores.max() > 0
        assert torch.equal(ours.labels, reference.labels)
        torch.testing.assert_close(
            ours.scores, reference.scores, rtol=0, atol=0)
        torch.testing.assert_close(
            ours.bboxes, reference.bboxes, rtol=0, atol=0)
