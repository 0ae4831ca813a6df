import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(bs, n, c) -> (bs, num_heads, n, c // num_heads), a view."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def blocked_mask(attn_mask: Optional[Tensor],
                 key_padding_mask: Optional[Tensor]) -> Optional[Tensor]:
    """Fold mmdet's masks (True = blocked) into one boolean mask that
    broadcasts to (bs, num_heads, num_queries, num_keys)."""
    blocked = None
    if key_padding_mask is not None:
        blocked = key_padding_mask.bool()[:, None, None, :]
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            raise TypeError('attn_mask must be a bool tensor (True = '
                            f'blocked), got {attn_mask.dtype}.')
        mask = attn_mask if attn_mask.dim() == 2 else attn_mask[:, None]
        blocked = mask if blocked is None else blocked | mask
    return blocked


def attention_weights(q: Tensor, k: Tensor,
                      blocked: Optional[Tensor]) -> Tensor:
    """Softmax attention weights of (bs, heads, n, d) queries and keys;
    ``blocked`` (True = may not attend) broadcasts to the logits."""
    logits = (q * (1 / math.sqrt(q.size(-1)))) @ k.transpose(-2, -1)
    if blocked is not None:
        logits = logits.masked_fill(blocked, float('-inf'))
    return logits.softmax(dim=-1)


def multi_head_attention(q: Tensor, k: Tensor, v: Tensor,
                         blocked: Optional[Tensor],
                         attn_drop: nn.Module) -> Tensor:
    """``attn_drop(softmax(q k^T / sqrt(d))) v`` of (bs, heads, n, d)
    tensors, heads merged: (bs, n, heads * dv).

    While ``attn_drop`` drops (a dropout module in training mode with
    ``p > 0``) the weights are materialised and passed through it, as the
    official code and mmdet's attention do; whichever dropout module the
    model holds (``torch.nn.Dropout`` or a faster one swapped in by
    :func:`mmdet_cdetr.speedup.apply_speedups`) then draws the mask.
    Otherwise PyTorch's fused ``scaled_dot_product_attention`` runs, with
    zero columns appended to value heads narrower than the query heads
    (conditional cross-attention): they leave the first ``dv`` output
    columns unchanged and let the fused kernels accept the shapes.
    """
    if attn_drop.training and getattr(attn_drop, 'p', 0) > 0:
        out = attn_drop(attention_weights(q, k, blocked)) @ v
    else:
        value_dims = v.size(-1)
        if value_dims < q.size(-1):
            v = F.pad(v, (0, q.size(-1) - value_dims))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if blocked is None else ~blocked)
        out = out[..., :value_dims]
    return out.transpose(1, 2).flatten(2)
