"""Linear layers through oneDNN (mmdet_cdetr.ops.fast_linear) against
``F.linear``: forward and gradients in float32, every layout the model
feeds them, and the plain path wherever oneDNN is not chosen."""
import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN
from torch import nn
from torch.profiler import ProfilerActivity, profile

from mmdet_cdetr.ops import (Linear, device_choices, fast_linear, linear,
                             onednn_linear, use_fast_linear)

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(),
    reason='PyTorch built without oneDNN')


@pytest.fixture(autouse=True)
def onednn_chosen(monkeypatch):
    """The kernel on every CPU, whatever this one's vector width and
    vendor."""
    monkeypatch.setattr(device_choices, '_cpu_capability', lambda: 'AVX512')
    monkeypatch.setattr(device_choices, 'is_intel_cpu', lambda: False)


@pytest.mark.parametrize('capability, chosen', [('AVX512', True),
                                                ('AVX2', False),
                                                ('DEFAULT', False)])
def test_onednn_is_chosen_only_with_avx512(monkeypatch, capability, chosen):
    monkeypatch.setattr(device_choices, '_cpu_capability', lambda: capability)
    assert onednn_linear('cpu') is chosen
    x, weight, bias = _tensors((50, 32), (16, 32), (16, ))
    ops = _ops_called(lambda: linear(x, weight, bias))
    assert ('mkldnn::_linear_pointwise' in ops) is chosen


def test_intel_cpus_keep_mkl(monkeypatch):
    """MKL runs its best kernels on Intel's CPUs: ``F.linear`` there."""
    monkeypatch.setattr(device_choices, 'is_intel_cpu', lambda: True)
    assert not onednn_linear('cpu')
    x, weight, bias = _tensors((50, 32), (16, 32), (16, ))
    assert 'mkldnn::_linear_pointwise' not in _ops_called(
        lambda: linear(x, weight, bias))


def _tensors(*shapes, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(*shape, generator=generator, dtype=dtype)
        for shape in shapes
    ]


def _ops_called(fn) -> set:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.name for event in prof.events()}


def _forward_and_grads(fn, x, weight, bias):
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]
    out = fn(*leaves)
    (out * torch.arange(out.numel()).reshape(out.shape).sin()).sum().backward()
    return [out.detach()] + [leaf.grad for leaf in leaves]


@pytest.mark.parametrize('layout',
                         ['2d', '3d', 'transposed', 'batch_of_one', 'no_bias'])
def test_linear_equals_f_linear_forward_and_backward(layout):
    x, weight, bias = _tensors((2, 37, 48), (24, 48), (24, ))
    if layout == '2d':
        x = x[0]
    elif layout == 'transposed':
        x = x.transpose(0, 1)  # (37, 2, 48), not contiguous
    elif layout == 'batch_of_one':
        x = x[:1]
    with_bias = layout != 'no_bias'

    def ours(x, weight, bias):
        return linear(x, weight, bias if with_bias else None)

    def reference(x, weight, bias):
        return F.linear(x.double(), weight.double(),
                        bias.double() if with_bias else None)

    got = _forward_and_grads(ours, x, weight, bias)
    expected = _forward_and_grads(reference, x, weight, bias)
    assert got[0].dtype == torch.float32
    for name, a, b in zip(['out', 'x', 'weight', 'bias'], got, expected):
        if name == 'bias' and not with_bias:
            assert a is None or not a.any()
            continue
        torch.testing.assert_close(
            a.double(), b.double(), rtol=1e-5, atol=1e-5, msg=name)


def test_linear_calls_onednn_on_the_cpu_and_f_linear_under_autocast():
    x, weight, bias = _tensors((50, 32), (16, 32), (16, ))
    ops = _ops_called(lambda: linear(x, weight, bias))
    assert 'mkldnn::_linear_pointwise' in ops and 'aten::addmm' not in ops
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out, expected = linear(x, weight, bias), F.linear(x, weight, bias)
        ops = _ops_called(lambda: linear(x, weight, bias))
    assert out.dtype == torch.bfloat16
    assert 'mkldnn::_linear_pointwise' not in ops
    assert torch.equal(out, expected)


def test_other_devices_and_dtypes_use_f_linear(monkeypatch):
    x, weight, bias = _tensors((50, 32), (16, 32), (16, ), dtype=torch.float64)
    assert 'mkldnn::_linear_pointwise' not in _ops_called(
        lambda: linear(x, weight, bias))
    monkeypatch.setattr(fast_linear, 'onednn_linear', lambda device: False)
    x, weight, bias = _tensors((50, 32), (16, 32), (16, ))
    assert 'mkldnn::_linear_pointwise' not in _ops_called(
        lambda: linear(x, weight, bias))
    monkeypatch.undo()
    assert linear(x[:0], weight, bias).shape == (0, 16)


def test_output_takes_in_place_operations():
    x, weight, bias = _tensors((2, 5, 8), (4, 8), (4, ))
    x.requires_grad_()
    out = linear(x, weight, bias)
    out.relu_().sum().backward()
    expected = (F.linear(x.detach(), weight, bias) > 0).float() @ weight
    torch.testing.assert_close(x.grad, expected)


def test_traced_graphs_keep_the_standard_linear():
    layer = use_fast_linear(nn.Sequential(nn.Linear(8, 4)))
    graph = torch.jit.trace(layer, torch.randn(3, 8)).inlined_graph
    kinds = {node.kind() for node in graph.nodes()}
    assert 'aten::linear' in kinds
    assert not any(kind.startswith('mkldnn::') for kind in kinds)


def test_use_fast_linear_keeps_parameters_and_skips_subclasses():

    class OwnLinear(nn.Linear):
        pass

    model = nn.Sequential(
        nn.Linear(4, 4), OwnLinear(4, 4), nn.MultiheadAttention(4, 2),
        FFN(4, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    use_fast_linear(model)
    assert type(model[0]) is Linear and type(model[1]) is OwnLinear
    assert type(model[2].out_proj) is Linear
    assert {type(m)
            for m in model[3].modules()} & {nn.Linear, Linear} == {Linear}
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
