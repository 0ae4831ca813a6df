import functools
from typing import Optional

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmdet.models.layers import DetrTransformerEncoder
from mmengine.model import ModuleList
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.errors import ConfigError
from .attention import blocked_mask, multi_head_attention, split_heads


@MODELS.register_module()
class SdpaDetrTransformerEncoder(DetrTransformerEncoder):
    """DETR's encoder, its self-attention through
    :func:`~.attention.multi_head_attention` (PyTorch's
    ``scaled_dot_product_attention`` outside dropout).

    mmdet's encoder layers call mmcv's ``MultiheadAttention``, which asks
    ``nn.MultiheadAttention`` for head-averaged attention weights and throws
    them away. Here the same parameters (names included) and the same math
    skip them, so checkpoints of either encoder load into the other. The
    dropout on each layer's attention weights is a ``nn.Dropout`` module of
    ``attn_drops`` (``nn.MultiheadAttention`` keeps it as a float).

    Args:
        with_cp: Activation checkpointing of each layer in training (as the
            decoder's ``with_cp``); torch's, not mmdet's ``num_cp``, which
            needs fairscale.
        *args, **kwargs: mmdet's ``DetrTransformerEncoder`` arguments.
    """

    def __init__(self, *args, with_cp: bool = False, **kwargs) -> None:
        self.with_cp = with_cp
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        for index, layer in enumerate(self.layers):
            attn = layer.self_attn.attn
            if (attn.in_proj_weight is None or attn.bias_k is not None
                    or attn.add_zero_attn):
                raise ConfigError(
                    f'encoder layer {index}: SdpaDetrTransformerEncoder '
                    'supports plain self-attention only (no kdim/vdim, '
                    'add_bias_kv or add_zero_attn).')
        self.attn_drops = ModuleList(
            nn.Dropout(layer.self_attn.attn.dropout) for layer in self.layers)

    def forward(self, query: Tensor, query_pos: Tensor,
                key_padding_mask: Optional[Tensor], **kwargs) -> Tensor:
        """Encode (bs, num_tokens, dim) features; ``key_padding_mask`` is
        True at padded tokens, (bs, num_tokens)."""
        blocked = blocked_mask(None, key_padding_mask)
        run = _encoder_layer
        if self.with_cp and torch.is_grad_enabled():
            run = functools.partial(
                checkpoint, _encoder_layer, use_reentrant=False)
        for layer, attn_drop in zip(self.layers, self.attn_drops):
            query = run(layer, attn_drop, query, query_pos, blocked)
        return query


def _encoder_layer(layer: nn.Module, attn_drop: nn.Module, query: Tensor,
                   query_pos: Tensor, blocked: Optional[Tensor]) -> Tensor:
    """One post-norm encoder layer: self-attention, then the FFN."""
    query = layer.norms[0](
        _self_attention(layer.self_attn, attn_drop, query, query_pos, blocked))
    return layer.norms[1](layer.ffn(query))


def _self_attention(attn: MultiheadAttention, attn_drop: nn.Module,
                    query: Tensor, query_pos: Tensor,
                    blocked: Optional[Tensor]) -> Tensor:
    """mmcv's ``MultiheadAttention.forward`` for self-attention with the
    position added to query and key, without attention weights."""
    if not attn.batch_first:
        query, query_pos = query.transpose(0, 1), query_pos.transpose(0, 1)
    inner = attn.attn
    dims = inner.embed_dim
    weight, bias = inner.in_proj_weight, inner.in_proj_bias
    query_key = F.linear(query + query_pos, weight[:2 * dims],
                         None if bias is None else bias[:2 * dims])
    value = F.linear(query, weight[2 * dims:],
                     None if bias is None else bias[2 * dims:])
    q, k, v = (
        split_heads(tensor, inner.num_heads)
        for tensor in (*query_key.chunk(2, dim=-1), value))
    out = inner.out_proj(multi_head_attention(q, k, v, blocked, attn_drop))
    out = query + attn.dropout_layer(attn.proj_drop(out))
    return out if attn.batch_first else out.transpose(0, 1)
