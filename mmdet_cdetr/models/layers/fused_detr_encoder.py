from typing import Optional

from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmdet.models.layers import DetrTransformerEncoder
from torch import Tensor

from mmdet_cdetr.registry import MODELS


@MODELS.register_module()
class FusedDetrTransformerEncoder(DetrTransformerEncoder):
    """DETR's encoder, with self-attention that never builds attention
    weights.

    mmdet's encoder layers call mmcv's ``MultiheadAttention``, which asks
    ``nn.MultiheadAttention`` for the head-averaged attention weights and
    throws them away. Asking for none lets PyTorch run its fused
    ``scaled_dot_product_attention`` kernel instead of materialising and
    averaging (bs, heads, HW, HW) weights. The layers, their parameters
    (names included) and the math are mmdet's, so checkpoints of either
    encoder load into the other.
    """

    def forward(self, query: Tensor, query_pos: Tensor,
                key_padding_mask: Optional[Tensor], **kwargs) -> Tensor:
        """Encode (bs, num_tokens, dim) features; ``key_padding_mask`` is
        True at padded tokens, (bs, num_tokens)."""
        for layer in self.layers:
            query = layer.norms[0](
                _self_attention(layer.self_attn, query, query_pos,
                                key_padding_mask))
            query = layer.norms[1](layer.ffn(query))
        return query


def _self_attention(attn: MultiheadAttention, query: Tensor, query_pos: Tensor,
                    key_padding_mask: Optional[Tensor]) -> Tensor:
    """mmcv's ``MultiheadAttention.forward`` for self-attention with the
    position added to query and key, without attention weights."""
    query_key = query + query_pos
    if attn.batch_first:
        query_key, value = query_key.transpose(0, 1), query.transpose(0, 1)
    else:
        value = query
    out = attn.attn(
        query_key,
        query_key,
        value,
        key_padding_mask=key_padding_mask,
        need_weights=False)[0]
    if attn.batch_first:
        out = out.transpose(0, 1)
    return query + attn.dropout_layer(attn.proj_drop(out))
