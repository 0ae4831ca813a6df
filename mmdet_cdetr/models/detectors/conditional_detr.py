from typing import Dict, Optional, Tuple

import torch
from mmdet.models.detectors import DETR
from mmdet.models.layers import SinePositionalEncoding
from torch import Tensor, nn

from mmdet_cdetr.registry import MODELS
from ..layers import (ConditionalDetrTransformerDecoder,
                      FusedDetrTransformerEncoder)


@MODELS.register_module()
class ConditionalDETR(DETR):
    """Conditional DETR (Meng et al., ICCV 2021) on mmdet's DETR skeleton.

    Backbone, neck, sine positional encoding and encoder are DETR's (the
    encoder as :class:`FusedDetrTransformerEncoder`: same layers and
    parameters, no attention weights computed); the decoder is
    :class:`ConditionalDetrTransformerDecoder`. The decoder
    returns the reference points along with the hidden states because the
    head predicts box centres relative to them.

    Args:
        backbone_channels_last: Feed the backbone channels-last (NHWC)
            images. Same weights and math; convolutions and frozen batch norms
            run faster that way on CPUs (oneDNN) and on tensor-core GPUs.
            The neck's NHWC output is exactly the (bs, HW, C) token layout
            the transformer wants. Backbone and neck weights are then kept
            channels-last too, the layout of their gradients.
        **kwargs: :class:`mmdet.models.detectors.DETR`'s arguments.
    """

    def __init__(self,
                 *args,
                 backbone_channels_last: bool = True,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.backbone_channels_last = backbone_channels_last
        if backbone_channels_last:
            # Convolutions on NHWC inputs return NHWC weight gradients. DDP
            # lays its gradient buckets out like the parameters: NCHW
            # weights would cost a copy of every gradient on every step
            # ("Grad strides do not match bucket view strides").
            self.backbone.to(memory_format=torch.channels_last)
            self.neck.to(memory_format=torch.channels_last)

    def _init_layers(self) -> None:
        self.positional_encoding = SinePositionalEncoding(
            **self.positional_encoding)
        self.encoder = FusedDetrTransformerEncoder(**self.encoder)
        self.decoder = ConditionalDetrTransformerDecoder(**self.decoder)
        self.embed_dims = self.encoder.embed_dims
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)
        num_feats = self.positional_encoding.num_feats
        if 2 * num_feats != self.embed_dims:
            raise ValueError(
                'positional_encoding.num_feats must be half of embed_dims, '
                f'got num_feats={num_feats} and embed_dims={self.embed_dims}.')

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor]:
        if self.backbone_channels_last:
            batch_inputs = batch_inputs.contiguous(
                memory_format=torch.channels_last)
        return super().extract_feat(batch_inputs)

    def pre_decoder(self, memory: Tensor) -> Tuple[Dict, Dict]:
        """Zero content queries and the learned query positions ``o_q``.

        ``o_q`` is expanded over the batch, not repeated as in mmdet's DETR:
        the decoder sees the stride-0 batch dimension and projects ``o_q``
        once per batch instead of once per image.
        """
        batch_size = memory.size(0)
        query_pos = self.query_embedding.weight.expand(batch_size, -1, -1)
        query = memory.new_zeros(query_pos.shape)
        return dict(query_pos=query_pos, query=query, memory=memory), {}

    def forward_decoder(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                        memory_mask: Optional[Tensor],
                        memory_pos: Tensor) -> Dict:
        hidden_states, references = self.decoder(
            query=query,
            key=memory,
            query_pos=query_pos,
            key_pos=memory_pos,
            key_padding_mask=memory_mask)
        return dict(hidden_states=hidden_states, references=references)
