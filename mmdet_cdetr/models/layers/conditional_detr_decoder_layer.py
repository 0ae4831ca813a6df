from typing import Optional

from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmdet.models.layers import DetrTransformerDecoderLayer
from mmengine.model import ModuleList
from torch import Tensor

from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.errors import ConfigError
from .conditional_attention import ConditionalAttention


@MODELS.register_module()
class ConditionalDetrTransformerDecoderLayer(DetrTransformerDecoderLayer):
    """Post-norm decoder layer: self-attention, conditional cross-attention
    and FFN, each followed by a residual connection and LayerNorm.

    Configured like mmdet's DETR decoder layer (``self_attn_cfg``,
    ``cross_attn_cfg``, ``ffn_cfg``, ``norm_cfg``); the two attention configs
    are :class:`ConditionalAttention` arguments.
    """

    def _init_layers(self) -> None:
        self.self_attn = ConditionalAttention(**self.self_attn_cfg)
        self.cross_attn = ConditionalAttention(**self.cross_attn_cfg)
        if self.self_attn.cross_attn or not self.cross_attn.cross_attn:
            raise ConfigError('self_attn_cfg needs cross_attn=False and '
                              'cross_attn_cfg needs cross_attn=True.')
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**self.ffn_cfg)
        self.norms = ModuleList([
            build_norm_layer(self.norm_cfg, self.embed_dims)[1]
            for _ in range(3)
        ])

    def forward(self,
                query: Tensor,
                key: Tensor,
                query_pos: Tensor,
                key_pos: Tensor,
                ref_sine_embed: Tensor,
                key_padding_mask: Optional[Tensor] = None,
                self_attn_mask: Optional[Tensor] = None,
                is_first: bool = False,
                num_query_groups: int = 1) -> Tensor:
        """Update the decoder embeddings (bs, num_queries, embed_dims).

        Args:
            query: Decoder embeddings ``f``.
            key: Encoder memory, (bs, num_keys, embed_dims).
            query_pos: Query positional embeddings ``o_q``.
            key_pos: Memory positional encoding, like ``key``.
            ref_sine_embed: Conditional spatial query before projection.
            key_padding_mask: True at padded memory positions, (bs, num_keys).
            self_attn_mask: Optional bool mask between queries.
            is_first: Whether this is the first decoder layer.
            num_query_groups: Groups of queries (Group DETR) that do not
                attend to each other in self-attention.
        """
        query = self.norms[0](
            self.self_attn(
                query,
                query,
                query_pos,
                attn_mask=self_attn_mask,
                num_groups=num_query_groups))
        query = self.norms[1](
            self.cross_attn(
                query,
                key,
                query_pos,
                key_pos=key_pos,
                ref_sine_embed=ref_sine_embed,
                key_padding_mask=key_padding_mask,
                is_first=is_first))
        return self.norms[2](self.ffn(query))
