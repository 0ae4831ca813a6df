from typing import Optional

from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmdet.models.layers import DetrTransformerEncoder
from torch import Tensor

from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.errors import ConfigError
from .attention import blocked_mask, multi_head_attention, split_heads
from .fast_dropout import use_fast_dropout
from .fast_linear import linear


@MODELS.register_module()
class FusedDetrTransformerEncoder(DetrTransformerEncoder):
    """DETR's encoder, with self-attention that never builds attention
    weights it does not need.

    mmdet's encoder layers call mmcv's ``MultiheadAttention``, which asks
    ``nn.MultiheadAttention`` for the head-averaged attention weights and
    throws them away. Here the same parameters feed
    :func:`multi_head_attention` (PyTorch's fused kernel; on the CPU with
    dropout, :mod:`.fast_dropout` masks), and every dropout is
    :class:`~.fast_dropout.Dropout`. The layers, their parameters (names
    included) and the math are mmdet's, so checkpoints of either encoder load
    into the other.
    """

    def _init_layers(self) -> None:
        super()._init_layers()
        for index, layer in enumerate(self.layers):
            attn = layer.self_attn.attn
            if (not attn._qkv_same_embed_dim or attn.bias_k is not None
                    or attn.add_zero_attn):
                raise ConfigError(
                    f'encoder layer {index}: FusedDetrTransformerEncoder '
                    'supports plain self-attention only (no kdim/vdim, '
                    'add_bias_kv or add_zero_attn).')
        use_fast_dropout(self)

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
    if not attn.batch_first:
        query, query_pos = query.transpose(0, 1), query_pos.transpose(0, 1)
    inner = attn.attn
    dims = inner.embed_dim
    weight, bias = inner.in_proj_weight, inner.in_proj_bias
    query_key = linear(query + query_pos, weight[:2 * dims],
                       None if bias is None else bias[:2 * dims])
    value = linear(query, weight[2 * dims:],
                   None if bias is None else bias[2 * dims:])
    q, k, v = (
        split_heads(tensor, inner.num_heads)
        for tensor in (*query_key.chunk(2, dim=-1), value))
    out = inner.out_proj(
        multi_head_attention(q, k, v, blocked_mask(None, key_padding_mask),
                             inner.dropout if inner.training else 0.))
    out = query + attn.dropout_layer(attn.proj_drop(out))
    return out if attn.batch_first else out.transpose(0, 1)
