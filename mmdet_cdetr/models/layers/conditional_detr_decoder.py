import functools
from typing import Optional, Tuple

import torch
from mmcv.cnn import build_norm_layer
from mmdet.models.layers import MLP, DetrTransformerDecoder
from mmdet.models.layers.transformer.utils import coordinate_to_encoding
from mmengine.model import ModuleList
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.errors import ConfigError
from .conditional_attention import project_batch_shared
from .conditional_detr_decoder_layer import \
    ConditionalDetrTransformerDecoderLayer
from .precision import autocast_off


@MODELS.register_module()
class ConditionalDetrTransformerDecoder(DetrTransformerDecoder):
    """Decoder of Conditional DETR.

    The reference point ``s = sigmoid(MLP(o_q))`` is computed once from the
    query positional embeddings and shared by all layers. Each layer gets the
    conditional spatial query ``lambda_q * p_s``: ``p_s`` is the sine
    embedding of ``s`` (y part first, then x) and ``lambda_q = MLP(f)`` of the
    embedding entering the layer, fixed to 1 for the first layer.

    Returns the post-normed output of every layer (for the auxiliary losses)
    and the reference points. The
    reference points and their sine embedding are computed in float32 under
    autocast too: bf16 would place them only to within 1/256 of the image.

    Args:
        with_cp: Activation checkpointing: in training, keep each layer's
            input only and recompute its activations in the backward pass
            (less memory, one more forward pass of the decoder; the same
            losses and gradients, dropout included, since the random state
            is replayed).
        *args, **kwargs: mmdet's ``DetrTransformerDecoder`` arguments.
    """

    def __init__(self, *args, with_cp: bool = False, **kwargs) -> None:
        self.with_cp = with_cp
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        self.layers = ModuleList([
            ConditionalDetrTransformerDecoderLayer(**self.layer_cfg)
            for _ in range(self.num_layers)
        ])
        self.embed_dims = self.layers[0].embed_dims
        if self.embed_dims % 2:
            raise ConfigError('embed_dims must be even to hold the (y, x) '
                              f'sine embedding, got {self.embed_dims}.')
        self.post_norm = build_norm_layer(self.post_norm_cfg,
                                          self.embed_dims)[1]
        self.query_scale = MLP(self.embed_dims, self.embed_dims,
                               self.embed_dims, 2)
        self.ref_point_head = MLP(self.embed_dims, self.embed_dims, 2, 2)
        # Only the first layer adds the projected o_q to the content query.
        for layer in self.layers[1:]:
            layer.cross_attn.qpos_proj = None

    def forward(self,
                query: Tensor,
                key: Tensor,
                query_pos: Tensor,
                key_pos: Tensor,
                key_padding_mask: Optional[Tensor] = None,
                num_query_groups: int = 1,
                **kwargs) -> Tuple[Tensor, Tensor]:
        """Decode.

        Args:
            query: Initial content queries (zeros), (bs, num_queries, dim).
            key: Encoder memory, (bs, num_keys, dim).
            query_pos: Query positional embeddings ``o_q``, like ``query``.
            key_pos: Memory positional encoding, like ``key``.
            key_padding_mask: True at padded memory positions, (bs, num_keys).
            num_query_groups: The queries are this many groups (Group DETR,
                in training) that do not see each other in self-attention.

        Returns:
            tuple: hidden states (num_layers, bs, num_queries, dim), or
            (1, ...) when ``return_intermediate`` is False, and reference
            points (bs, num_queries, 2) in [0, 1] as (x, y).
        """
        with autocast_off(query_pos):
            references = project_batch_shared(self.ref_point_head,
                                              query_pos.float()).sigmoid()
            position_embed = coordinate_to_encoding(
                references, num_feats=self.embed_dims // 2)
        references = references.expand(query.size(0), -1, -1)
        intermediate = []
        for layer_id, layer in enumerate(self.layers):
            is_first = layer_id == 0
            ref_sine_embed = position_embed.expand_as(query) if is_first else (
                position_embed * self.query_scale(query))
            run = layer
            if self.with_cp and torch.is_grad_enabled():
                run = functools.partial(checkpoint, layer, use_reentrant=False)
            query = run(
                query,
                key,
                query_pos,
                key_pos,
                ref_sine_embed,
                key_padding_mask=key_padding_mask,
                is_first=is_first,
                num_query_groups=num_query_groups)
            if self.return_intermediate:
                intermediate.append(self.post_norm(query))
        if self.return_intermediate:
            return torch.stack(intermediate), references
        return self.post_norm(query).unsqueeze(0), references
