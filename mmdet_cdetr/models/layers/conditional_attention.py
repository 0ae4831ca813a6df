import math
from typing import Optional

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.errors import ConfigError
from .attention import (attention_weights, blocked_mask, multi_head_attention,
                        split_heads)


@MODELS.register_module()
class ConditionalAttention(BaseModule):
    """Decoder attention of Conditional DETR (self- or cross-attention).

    Content and positional parts get separate projections instead of one
    packed in-projection, because Conditional DETR combines them differently
    in the two attentions:

    * self-attention: ``q = Wqc f + Wqp o_q``, ``k = Wkc f + Wkp o_q``,
      ``v = Wv f``.
    * cross-attention: per head ``q_h = [c_q,h ; p_q,h]`` and
      ``k_h = [c_k,h ; p_k,h]`` where ``p_q = Wqs (lambda_q * p_s)`` is the
      conditional spatial query and ``p_k = Wkp pos(memory)``. The query/key
      head dimension is thus twice the value head dimension and the logits
      are scaled by ``1 / sqrt(2 * embed_dims / num_heads)``. Only the first
      decoder layer adds ``Wqp o_q`` to ``c_q`` and ``p_k`` to ``c_k``
      (``is_first``), later layers have no ``qpos_proj`` at all.

    Group DETR: self-attention over ``num_groups`` groups of queries
    (``forward``'s argument, set by the detector in training) lets each group
    attend only to itself. The projections run on all queries at once
    (``o_q``'s once per batch); the groups are then folded into the batch
    dimension, so attention costs ``K * N^2``, not ``(K * N)^2``.

    Parameter names follow mmdet's ``ConditionalAttention`` so checkpoints of
    either load into the other.

    Two numerically equal paths compute the attention:
    :func:`multi_head_attention` (default: PyTorch's fused kernel, or
    materialised weights while the attention dropout drops) and a plain one
    that keeps the weights. Set ``record_attention = True`` to
    take the plain path and keep the softmax weights plus the content and
    spatial logits of cross-attention in ``self.recorded`` (used by the
    attention visualiser).

    Args:
        embed_dims: Width of the decoder embeddings.
        num_heads: Number of attention heads.
        attn_drop: Dropout on the attention weights.
        proj_drop: Dropout on the output before the residual connection.
        cross_attn: Build the cross-attention variant.
        keep_query_pos: Add ``Wqp o_q`` / ``p_k`` in every layer, not only
            the first (an ablation of the paper; off in Conditional DETR).
        batch_first: Must be True (mmdet's DETRs are batch first).
        init_cfg: Initialisation config.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 cross_attn: bool = False,
                 keep_query_pos: bool = False,
                 batch_first: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not batch_first:
            raise ConfigError('ConditionalAttention only supports '
                              'batch_first=True, as all DETRs in mmdet.')
        if embed_dims % num_heads:
            raise ConfigError(f'embed_dims ({embed_dims}) must be divisible '
                              f'by num_heads ({num_heads}).')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.cross_attn = cross_attn
        self.keep_query_pos = keep_query_pos
        self.record_attention = False
        self.recorded: dict = {}

        self.qcontent_proj = nn.Linear(embed_dims, embed_dims)
        self.qpos_proj = nn.Linear(embed_dims, embed_dims)
        self.kcontent_proj = nn.Linear(embed_dims, embed_dims)
        self.kpos_proj = nn.Linear(embed_dims, embed_dims)
        self.v_proj = nn.Linear(embed_dims, embed_dims)
        if cross_attn:
            self.qpos_sine_proj = nn.Linear(embed_dims, embed_dims)
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.constant_(self.out_proj.bias, 0.)

    def forward(self,
                query: Tensor,
                key: Tensor,
                query_pos: Tensor,
                key_pos: Optional[Tensor] = None,
                ref_sine_embed: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None,
                is_first: bool = False,
                num_groups: int = 1) -> Tensor:
        """Attend and add the residual.

        Args:
            query: Decoder embeddings ``f``, (bs, num_queries, embed_dims).
            key: Encoder memory (cross) or ignored (self, uses ``query``),
                (bs, num_keys, embed_dims).
            query_pos: Query positional embeddings ``o_q``, like ``query``.
            key_pos: Memory positional encoding (cross only), like ``key``.
            ref_sine_embed: ``lambda_q * p_s`` (cross only), like ``query``.
            attn_mask: Bool, True where a query may not attend,
                (num_queries, num_keys) or (bs, num_queries, num_keys); in
                self-attention over groups, within a group:
                (num_queries // num_groups,) * 2.
            key_padding_mask: Bool, True at padded keys, (bs, num_keys).
            is_first: Whether this is the first decoder layer.
            num_groups: Self-attention only: the queries are this many
                equal groups, in order, that do not attend to each other.

        Returns:
            Tensor: ``query`` plus the attention output, same shape.
        """
        if self.cross_attn:
            q, k, v = self._cross_qkv(query, key, query_pos, key_pos,
                                      ref_sine_embed, is_first)
        else:
            q, k, v = self._self_qkv(query, query_pos, num_groups)
        out = self._attend(q, k, v, blocked_mask(attn_mask, key_padding_mask))
        return query + self.proj_drop(self.out_proj(out.reshape_as(query)))

    def _split_heads(self, x: Tensor) -> Tensor:
        return split_heads(x, self.num_heads)

    def _self_qkv(self, query: Tensor, query_pos: Tensor, num_groups: int):
        """Heads of q, k, v with the query groups folded into the batch:
        (bs * num_groups, heads, num_queries // num_groups, head_dims)."""
        q = self.qcontent_proj(query) + project_batch_shared(
            self.qpos_proj, query_pos)
        k = self.kcontent_proj(query) + project_batch_shared(
            self.kpos_proj, query_pos)
        v = self.v_proj(query)
        return tuple(
            self._split_heads(x.unflatten(1, (num_groups, -1)).flatten(0, 1))
            for x in (q, k, v))

    def _cross_qkv(self, query: Tensor, memory: Tensor, query_pos: Tensor,
                   key_pos: Tensor, ref_sine_embed: Tensor, is_first: bool):
        if key_pos is None or ref_sine_embed is None:
            raise ValueError('Conditional cross-attention needs key_pos '
                             '(memory positional encoding) and '
                             'ref_sine_embed (conditional spatial query).')
        q_content = self.qcontent_proj(query)
        k_content = self.kcontent_proj(memory)
        k_pos = self.kpos_proj(key_pos)
        if is_first or self.keep_query_pos:
            q_content = q_content + project_batch_shared(
                self.qpos_proj, query_pos)
            k_content = k_content + k_pos
        q_spatial = project_batch_shared(self.qpos_sine_proj,
                                         ref_sine_embed).expand_as(q_content)
        q_content, q_spatial = (self._split_heads(q_content),
                                self._split_heads(q_spatial))
        k_content, k_pos = self._split_heads(k_content), self._split_heads(
            k_pos)
        if self.record_attention:
            scale = 1 / math.sqrt(2 * q_content.size(-1))
            self.recorded['content_logits'] = (
                q_content @ k_content.transpose(-2, -1) * scale).detach()
            self.recorded['spatial_logits'] = (
                q_spatial @ k_pos.transpose(-2, -1) * scale).detach()
        q = torch.cat([q_content, q_spatial], dim=-1)
        k = torch.cat([k_content, k_pos], dim=-1)
        return q, k, self._split_heads(self.v_proj(memory))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor,
                blocked: Optional[Tensor]) -> Tensor:
        """Multi-head attention of (bs, heads, n, d) tensors, heads merged."""
        if not self.record_attention:
            return multi_head_attention(q, k, v, blocked, self.attn_drop)
        weights = attention_weights(q, k, blocked)
        self.recorded['weights'] = weights.detach()
        out = self.attn_drop(weights) @ v
        return out.transpose(1, 2).flatten(2)


def project_batch_shared(projection: nn.Module, x: Tensor) -> Tensor:
    """``projection(x)``, computed once for the whole batch when ``x``
    repeats one (n, c) tensor along the batch without copies (stride 0), as
    the learned query positions ``o_q`` do. The result then has batch size 1
    and broadcasts."""
    if x.size(0) > 1 and x.stride(0) == 0:
        return projection(x[:1])
    return projection(x)
