"""ReLU that never modifies an autograd-recorded view in place
(mmdet_cdetr.ops.view_safe_relu) against ``nn.ReLU(inplace=True)``: same
values and gradients, no ``CopySlices`` in the backward graph, and in place
wherever that is free."""
import torch
import torch.nn.functional as F
from conftest import build_quick_model, parity_batch
from mmcv.cnn.bricks.transformer import FFN
from torch import nn

from mmdet_cdetr.ops import ViewSafeReLU, use_fast_kernels


def _graph_nodes(tensor: torch.Tensor) -> set:
    """Names of every node of the backward graph that produces ``tensor``."""
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(parent for parent, _ in node.next_functions)
    return names


def _linear_then_relu(relu: nn.Module):
    """Output and input/weight gradients of ``relu(linear(x))`` for a 3-D
    ``x``: with a bias, the linear output is a view of its 2-D product."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 16, generator=generator, requires_grad=True)
    weight = torch.randn(32, 16, generator=generator, requires_grad=True)
    bias = torch.randn(32, generator=generator, requires_grad=True)
    hidden = F.linear(x, weight, bias)
    assert hidden._base is not None
    out = relu(hidden)
    grad = torch.randn(out.shape, generator=generator)
    out.backward(grad)
    return out, x.grad, weight.grad, bias.grad, _graph_nodes(out)


def test_equals_in_place_relu_without_copying_slices():
    mine, *mine_grads, mine_nodes = _linear_then_relu(ViewSafeReLU(True))
    plain, *plain_grads, plain_nodes = _linear_then_relu(nn.ReLU(True))
    assert torch.equal(mine, plain)
    for ours, theirs in zip(mine_grads, plain_grads):
        assert torch.equal(ours, theirs)
    assert 'CopySlices' in plain_nodes
    assert 'CopySlices' not in mine_nodes


def test_stays_in_place_where_that_is_free():
    relu = ViewSafeReLU(inplace=True)
    fresh = torch.randn(4, 5, requires_grad=True) * 1
    assert relu(fresh) is fresh
    with torch.no_grad():
        view = torch.randn(2, 3, 8).view(6, 8)
        assert relu(view) is view
    assert (view >= 0).all()


def test_out_of_place_relu_is_left_as_configured():
    x = torch.randn(3, 4)
    out = ViewSafeReLU(inplace=False)(x)
    assert out is not x and torch.equal(out, x.clamp_min(0))


def test_ffn_relus_are_routed_and_state_dict_kept():
    ffn = FFN(embed_dims=16, feedforward_channels=32)
    keys = set(ffn.state_dict())
    use_fast_kernels(ffn)
    relus = [m for m in ffn.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(type(m) is ViewSafeReLU for m in relus)
    assert set(ffn.state_dict()) == keys


def test_detector_training_graph_copies_no_slices():
    """No in-place op on a recorded view anywhere in the training step's
    graph (FFNs of encoder, decoder and head included)."""
    model = build_quick_model(num_classes=20)  # the batch's labels: 0, 17
    model.train()
    inputs, samples = parity_batch(model, with_gt=True)
    losses = model.loss(inputs, samples)
    total = sum(value for key, value in losses.items() if 'loss' in key)
    nodes = _graph_nodes(total)
    assert 'ReluBackward0' in nodes
    assert 'CopySlices' not in nodes
