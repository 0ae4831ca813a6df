"""The fused attention paths equal the plain ones (forward and gradients),
for the whole encoder and the whole decoder, with padded keys."""
import pytest
import torch
from mmdet.models.layers import DetrTransformerEncoder

from mmdet_cdetr.models.layers import (ConditionalAttention,
                                       ConditionalDetrTransformerDecoder)
from mmdet_cdetr.ops import FusedDetrTransformerEncoder

BS, NQ, NK, DIM, HEADS = 2, 6, 20, 32, 4


def _inputs(*shapes) -> list:
    """Seeded random tensors that require gradients."""
    generator = torch.Generator().manual_seed(1)
    return [
        torch.randn(*shape, generator=generator).requires_grad_()
        for shape in shapes
    ]


def _padding() -> torch.Tensor:
    padding = torch.zeros(BS, NK, dtype=torch.bool)
    padding[1, 13:] = True
    return padding


def _grads(module: torch.nn.Module, inputs: list) -> list:
    """Gradients of every parameter and input (zeros where unused)."""
    return [
        torch.zeros_like(p) if p.grad is None else p.grad.clone()
        for p in list(module.parameters()) + inputs
    ]


def _loss(out: torch.Tensor) -> torch.Tensor:
    """A fixed random projection of ``out``: after a LayerNorm, ``out.square()
    .sum()`` is nearly constant and its gradients only rounding noise."""
    weights = torch.randn(
        out.shape, generator=torch.Generator().manual_seed(3))
    return (out * weights).sum()


def _assert_same(outs: list, grads: list) -> None:
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=0)
    for grad, reference in zip(grads[1], grads[0]):
        torch.testing.assert_close(grad, reference, atol=1e-5, rtol=1e-5)


def _encoder_cfg(dropout: float) -> dict:
    return dict(
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(
                embed_dims=DIM,
                num_heads=HEADS,
                dropout=dropout,
                batch_first=True),
            ffn_cfg=dict(
                embed_dims=DIM, feedforward_channels=64, ffn_drop=dropout)))


def _decoder_cfg(dropout: float) -> dict:
    attn = dict(
        embed_dims=DIM, num_heads=HEADS, attn_drop=dropout, proj_drop=dropout)
    return dict(
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=dict(attn, cross_attn=False),
            cross_attn_cfg=dict(attn, cross_attn=True),
            ffn_cfg=dict(
                embed_dims=DIM, feedforward_channels=64, ffn_drop=dropout)),
        return_intermediate=True)


# Dropout on in eval mode, or training mode with dropout off: the fused
# kernels draw dropout masks differently, so only these are comparable.
MODES = [(0.1, False), (0., True)]


@pytest.mark.parametrize('dropout,train', MODES)
def test_fused_encoder_equals_mmdet_encoder(dropout, train):
    reference = DetrTransformerEncoder(**_encoder_cfg(dropout))
    fused = FusedDetrTransformerEncoder(**_encoder_cfg(dropout))
    # Same parameter names: either's state dict loads into the other.
    fused.load_state_dict(reference.state_dict(), strict=True)
    outs, grads = [], []
    for encoder in (reference, fused):
        encoder.train(train)
        query, pos = _inputs((BS, NK, DIM), (BS, NK, DIM))
        out = encoder(query, pos, _padding())
        _loss(out).backward()
        outs.append(out.detach())
        grads.append(_grads(encoder, [query, pos]))
    assert outs[0].shape == (BS, NK, DIM)
    _assert_same(outs, grads)
    # Padded tokens are ignored by the unpadded ones in both.
    assert grads[1][-2][1, 13:].abs().sum() > 0  # they still get gradients
    query, pos = _inputs((BS, NK, DIM), (BS, NK, DIM))
    moved = query.detach().clone()
    moved[1, 13:] += 10.
    torch.testing.assert_close(
        fused(moved, pos, _padding())[1, :13], outs[1][1, :13])


@pytest.mark.parametrize('dropout,train', MODES)
def test_decoder_fused_equals_plain(dropout, train):
    decoder = ConditionalDetrTransformerDecoder(**_decoder_cfg(dropout))
    decoder.train(train)
    outs, grads = [], []
    for record in (False, True):
        for module in decoder.modules():
            if isinstance(module, ConditionalAttention):
                module.record_attention = record
        decoder.zero_grad()
        query, query_pos, memory, key_pos = _inputs(
            (BS, NQ, DIM), (BS, NQ, DIM), (BS, NK, DIM), (BS, NK, DIM))
        hidden, references = decoder(
            query, memory, query_pos, key_pos, key_padding_mask=_padding())
        (_loss(hidden) + _loss(references)).backward()
        outs.append(torch.cat([hidden.flatten(), references.flatten()]))
        grads.append(_grads(decoder, [query, query_pos, memory, key_pos]))
    assert decoder.layers[-1].cross_attn.recorded['weights'].shape == (BS,
                                                                       HEADS,
                                                                       NQ, NK)
    _assert_same([out.detach() for out in outs], grads)
    # Padded memory gets no gradient on either path.
    for path_grads in grads:
        assert path_grads[-2][1, 13:].abs().max() == 0
