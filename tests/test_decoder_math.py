"""The decoder against a plain, loop-by-loop computation of the paper's
equations for a tiny case."""
import math

import torch
import torch.nn.functional as F

from mmdet_cdetr.models.layers import ConditionalDetrTransformerDecoder

DIM, HEADS, LAYERS, NQ, NK, BS = 16, 2, 3, 4, 6, 2


def _decoder() -> ConditionalDetrTransformerDecoder:
    attn = dict(embed_dims=DIM, num_heads=HEADS)
    decoder = ConditionalDetrTransformerDecoder(
        num_layers=LAYERS,
        layer_cfg=dict(
            self_attn_cfg=dict(attn, cross_attn=False),
            cross_attn_cfg=dict(attn, cross_attn=True),
            ffn_cfg=dict(embed_dims=DIM, feedforward_channels=24,
                         ffn_drop=0.)))
    for p in decoder.parameters():  # no zero biases: every term must count
        torch.nn.init.normal_(p, std=0.3)
    return decoder.eval()


def _lin(layer, x):
    return x @ layer.weight.T + layer.bias


def _mlp(mlp, x):
    for i, layer in enumerate(mlp.layers):
        x = _lin(layer, x)
        if i < len(mlp.layers) - 1:
            x = x.relu()
    return x


def _sine(coords):
    """128-style sine embedding, written out: y features first, then x;
    feature i of a coordinate c is sin/cos(2 pi c / 10000^(2 floor(i/2)/F))
    with sin at even i, cos at odd i."""
    feats = DIM // 2
    out = torch.zeros(coords.shape[:-1] + (DIM, ))
    for part, axis in enumerate((1, 0)):
        for i in range(feats):
            angle = coords[..., axis] * 2 * math.pi / 10000**(2 *
                                                              (i // 2) / feats)
            out[..., part * feats + i] = angle.sin() if i % 2 == 0 \
                else angle.cos()
    return out


def _heads(q, k, v, blocked=None):
    """Attention head by head; q/k of width dq per head, v of width dv."""
    dq, dv = q.shape[-1] // HEADS, v.shape[-1] // HEADS
    outs = []
    for h in range(HEADS):
        qh, kh = q[..., h * dq:(h + 1) * dq], k[..., h * dq:(h + 1) * dq]
        logits = qh @ kh.transpose(-1, -2) / math.sqrt(dq)
        if blocked is not None:
            logits = logits.masked_fill(blocked[:, None, :], float('-inf'))
        outs.append(logits.softmax(-1) @ v[..., h * dv:(h + 1) * dv])
    return torch.cat(outs, -1)


def _interleave(content, spatial):
    """Per head h: [content_h ; spatial_h]."""
    d = content.shape[-1] // HEADS
    return torch.cat([
        torch.cat(
            [content[..., h * d:(h + 1) * d], spatial[..., h * d:(h + 1) * d]],
            -1) for h in range(HEADS)
    ], -1)


def _reference(decoder, query, memory, query_pos, key_pos, padding):
    refs = _mlp(decoder.ref_point_head, query_pos).sigmoid()
    p_s = _sine(refs)
    f, outputs = query, []
    for layer_id, layer in enumerate(decoder.layers):
        scale = 1. if layer_id == 0 else _mlp(decoder.query_scale, f)
        p_q_in = p_s * scale
        sa, ca = layer.self_attn, layer.cross_attn
        q = _lin(sa.qcontent_proj, f) + _lin(sa.qpos_proj, query_pos)
        k = _lin(sa.kcontent_proj, f) + _lin(sa.kpos_proj, query_pos)
        f = layer.norms[0](
            f + _lin(sa.out_proj, _heads(q, k, _lin(sa.v_proj, f))))
        c_q = _lin(ca.qcontent_proj, f)
        c_k = _lin(ca.kcontent_proj, memory)
        p_k = _lin(ca.kpos_proj, key_pos)
        if layer_id == 0:
            c_q = c_q + _lin(ca.qpos_proj, query_pos)
            c_k = c_k + p_k
        p_q = _lin(ca.qpos_sine_proj, p_q_in)
        attended = _heads(
            _interleave(c_q, p_q), _interleave(c_k, p_k),
            _lin(ca.v_proj, memory), padding)
        f = layer.norms[1](f + _lin(ca.out_proj, attended))
        fc1, fc2 = layer.ffn.layers[0][0], layer.ffn.layers[1]
        f = layer.norms[2](f + _lin(fc2, F.relu(_lin(fc1, f))))
        outputs.append(decoder.post_norm(f))
    return torch.stack(outputs), refs


def test_decoder_matches_plain_equations():
    torch.manual_seed(0)
    decoder = _decoder()
    query = torch.randn(BS, NQ, DIM)
    memory = torch.randn(BS, NK, DIM)
    query_pos = torch.randn(BS, NQ, DIM)
    key_pos = torch.randn(BS, NK, DIM)
    padding = torch.zeros(BS, NK, dtype=torch.bool)
    padding[0, 4:] = True
    with torch.no_grad():
        hidden, refs = decoder(query, memory, query_pos, key_pos, padding)
        want_hidden, want_refs = _reference(decoder, query, memory, query_pos,
                                            key_pos, padding)
    assert hidden.shape == (LAYERS, BS, NQ, DIM)
    assert refs.shape == (BS, NQ, 2)
    torch.testing.assert_close(refs, want_refs)
    torch.testing.assert_close(hidden, want_hidden, atol=1e-5, rtol=1e-5)


def test_only_first_layer_projects_query_position():
    decoder = _decoder()
    has_qpos = [
        layer.cross_attn.qpos_proj is not None for layer in decoder.layers
    ]
    assert has_qpos == [True] + [False] * (LAYERS - 1)
    names = {name for name, _ in decoder.named_parameters()}
    assert 'layers.0.cross_attn.qpos_proj.weight' in names
    assert 'layers.1.cross_attn.qpos_proj.weight' not in names


def test_reference_points_are_shared_and_query_pos_dependent():
    decoder = _decoder()
    query_pos = torch.randn(BS, NQ, DIM)
    _, refs = decoder(
        torch.zeros(BS, NQ, DIM), torch.randn(BS, NK, DIM), query_pos,
        torch.randn(BS, NK, DIM))
    torch.testing.assert_close(
        refs,
        _mlp(decoder.ref_point_head, query_pos).sigmoid())
    assert refs.min() > 0 and refs.max() < 1


def test_query_positions_expanded_over_the_batch_equal_repeated():
    """The detector expands o_q over the batch (stride 0) so that the decoder
    projects it once; outputs and gradients equal those of a repeated o_q."""
    decoder = _decoder()
    embedding = torch.randn(NQ, DIM)
    query = torch.randn(BS, NQ, DIM)
    memory, key_pos = torch.randn(BS, NK, DIM), torch.randn(BS, NK, DIM)
    results = []
    for shared in (True, False):
        weight = embedding.clone().requires_grad_()
        query_pos = (
            weight.expand(BS, -1, -1)
            if shared else weight.unsqueeze(0).repeat(BS, 1, 1))
        assert (query_pos.stride(0) == 0) == shared
        hidden, refs = decoder(query, memory, query_pos, key_pos)
        (hidden.square().sum() + refs.sum()).backward()
        results.append((hidden.detach(), refs.detach(), weight.grad))
    assert results[0][1].shape == (BS, NQ, 2)
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
