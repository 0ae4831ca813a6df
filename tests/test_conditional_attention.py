import pytest
import torch

from mmdet_cdetr.models.layers import ConditionalAttention

BS, NQ, NK, DIM, HEADS = 2, 5, 12, 32, 4


def _inputs(cross: bool):
    query = torch.randn(BS, NQ, DIM, requires_grad=True)
    query_pos = torch.randn(BS, NQ, DIM)
    memory = torch.randn(BS, NK, DIM, requires_grad=True)
    key_pos = torch.randn(BS, NK, DIM)
    sine = torch.randn(BS, NQ, DIM)
    padding = torch.zeros(BS, NK, dtype=torch.bool)
    padding[1, 7:] = True
    if cross:
        return dict(
            query=query,
            key=memory,
            query_pos=query_pos,
            key_pos=key_pos,
            ref_sine_embed=sine,
            key_padding_mask=padding)
    return dict(query=query, key=query, query_pos=query_pos)


@pytest.mark.parametrize('cross', [True, False])
@pytest.mark.parametrize('is_first', [True, False])
def test_fused_equals_plain_forward_and_grad(cross, is_first):
    attn = ConditionalAttention(DIM, HEADS, cross_attn=cross)
    inputs = _inputs(cross)
    grads = []
    outs = []
    for record in (False, True):
        attn.zero_grad()
        attn.record_attention = record
        out = attn(**inputs, is_first=is_first)
        out.square().sum().backward()
        outs.append(out.detach())
        # qpos_proj has no gradient where it is not used (not is_first).
        grads.append([
            torch.zeros_like(p) if p.grad is None else p.grad.clone()
            for p in attn.parameters()
        ] + [inputs['query'].grad.clone()])
        inputs['query'].grad = None
    assert outs[0].shape == (BS, NQ, DIM)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
    for fused, plain in zip(*grads):
        torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)


def test_cross_attention_ignores_padded_keys():
    attn = ConditionalAttention(DIM, HEADS, cross_attn=True).eval()
    inputs = _inputs(cross=True)
    out = attn(**inputs, is_first=True)
    changed = dict(inputs)
    changed['key'] = inputs['key'].detach().clone()
    changed['key'][1, 7:] += 100.
    changed['key_pos'] = inputs['key_pos'].clone()
    changed['key_pos'][1, 7:] -= 100.
    out2 = attn(**changed, is_first=True)
    torch.testing.assert_close(out, out2)
    changed['key'][0, 7:] += 1.  # image 0 has no padding: output moves
    assert not torch.allclose(out[0], attn(**changed, is_first=True)[0])


def test_recorded_weights_sum_to_one_and_respect_padding():
    attn = ConditionalAttention(DIM, HEADS, cross_attn=True).eval()
    attn.record_attention = True
    attn(**_inputs(cross=True), is_first=False)
    weights = attn.recorded['weights']
    assert weights.shape == (BS, HEADS, NQ, NK)
    torch.testing.assert_close(weights.sum(-1), torch.ones(BS, HEADS, NQ))
    assert weights[1, :, :, 7:].abs().max() == 0
    # The logits split into a content and a spatial part.
    assert attn.recorded['content_logits'].shape == (BS, HEADS, NQ, NK)
    assert attn.recorded['spatial_logits'].shape == (BS, HEADS, NQ, NK)


def test_first_layer_only_terms():
    """qpos_proj and the key position enter the content terms only when
    is_first (or keep_query_pos)."""
    attn = ConditionalAttention(DIM, HEADS, cross_attn=True).eval()
    inputs = _inputs(cross=True)
    later = attn(**inputs, is_first=False)
    other_pos = dict(inputs, query_pos=torch.randn(BS, NQ, DIM))
    torch.testing.assert_close(later, attn(**other_pos, is_first=False))
    assert not torch.allclose(
        attn(**inputs, is_first=True), attn(**other_pos, is_first=True))


def test_cross_attention_without_spatial_inputs_is_refused():
    attn = ConditionalAttention(DIM, HEADS, cross_attn=True)
    inputs = _inputs(cross=True)
    inputs['ref_sine_embed'] = None
    with pytest.raises(ValueError, match='ref_sine_embed'):
        attn(**inputs)


def test_bad_arguments():
    with pytest.raises(ValueError, match='divisible'):
        ConditionalAttention(30, 4)
    with pytest.raises(ValueError, match='batch_first'):
        ConditionalAttention(32, 4, batch_first=False)
