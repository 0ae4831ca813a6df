import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .device_choices import (materialise_reduced_precision_attention,
                             numpy_dropout_masks, pad_value_heads)
from .fast_dropout import KeptTimesScale, keep_mask


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
    # Scaling q, and adding the mask as -inf in place, saves two passes (and
    # their backward passes) over the larger logits tensor.
    logits = (q * (1 / math.sqrt(q.size(-1)))) @ k.transpose(-2, -1)
    if blocked is not None:
        logits += torch.zeros(
            blocked.shape, dtype=logits.dtype,
            device=logits.device).masked_fill_(blocked, float('-inf'))
    return logits.softmax(dim=-1)


# Above this many logits (64 MiB in bf16; R50 at 800x1216 has 7.2M per image)
# the fused kernel, which never holds them all, is kept.
MAX_MATERIALISED_LOGITS = 2**25


def _logits_numel(q: Tensor, k: Tensor) -> int:
    return q.shape[:-1].numel() * k.size(-2)


def _in_reduced_precision(x: Tensor) -> bool:
    """bf16/fp16 tensors, or float32 ones that autocast will cast."""
    return (x.dtype in (torch.bfloat16, torch.float16)
            or torch.is_autocast_enabled(x.device.type))


def multi_head_attention(q: Tensor, k: Tensor, v: Tensor,
                         blocked: Optional[Tensor],
                         dropout_p: float) -> Tensor:
    """``dropout(softmax(q k^T / sqrt(d))) v`` of (bs, heads, n, d)
    tensors, heads merged: (bs, n, heads * dv).

    Picks the fastest path: PyTorch's fused attention, except for
    dropout where :func:`~.device_choices.numpy_dropout_masks` holds (the
    CPU: the fused kernel falls back to an unfused one with PyTorch's slow
    CPU dropout); there the weights are materialised and dropped with
    :func:`~.fast_dropout.keep_mask`. bf16/fp16 attention without dropout
    is materialised where
    :func:`~.device_choices.materialise_reduced_precision_attention` holds.
    """
    value_dims = v.size(-1)
    if dropout_p > 0 and numpy_dropout_masks(q.device):
        # Dropping weights unscaled and scaling the (smaller) output instead
        # is the same product with one pass fewer over the weights.
        weights = attention_weights(q, k, blocked)
        dropped = KeptTimesScale.apply(weights,
                                       keep_mask(weights.shape, dropout_p), 1)
        out = (dropped @ v) * (1 / (1 - dropout_p))
    elif (dropout_p == 0 and _in_reduced_precision(q)
          and _logits_numel(q, k) <= MAX_MATERIALISED_LOGITS
          and materialise_reduced_precision_attention(q.device)):
        out = attention_weights(q, k, blocked) @ v
    else:
        if (dropout_p == 0 and value_dims < q.size(-1)
                and pad_value_heads(q.device)):
            # Zero columns appended to the values leave the first value_dims
            # output columns unchanged and let the fused kernel run.
            v = F.pad(v, (0, q.size(-1) - value_dims))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if blocked is None else ~blocked,
            dropout_p=dropout_p)[..., :value_dims]
    return out.transpose(1, 2).flatten(2)
