from typing import Dict, Optional, Tuple

import torch
from mmdet.models.detectors import DETR
from mmdet.models.layers import SinePositionalEncoding
from mmdet.structures import OptSampleList
from mmengine.device import get_device
from torch import Tensor, nn

from mmdet_cdetr.ops import (FusedDetrTransformerEncoder,
                             channels_last_backbone, use_fast_kernels)
from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.errors import ConfigError
from ..layers import ConditionalDetrTransformerDecoder
from ..task_modules import GroupHungarianAssigner


@MODELS.register_module()
class ConditionalDETR(DETR):
    """Conditional DETR (Meng et al., ICCV 2021) on mmdet's DETR skeleton.

    Backbone, neck, sine positional encoding and encoder are DETR's (the
    encoder as :class:`FusedDetrTransformerEncoder`: same layers and
    parameters, no attention weights computed); the decoder is
    :class:`ConditionalDetrTransformerDecoder`. The decoder
    returns the reference points along with the hidden states because the
    head predicts box centres relative to them.

    Group DETR (Chen et al., ICCV 2023; the official ``GroupDETR`` branch):
    with ``num_query_groups=K`` the query embedding holds K groups of
    ``num_queries`` rows. In training all groups are decoded, each group's
    queries attend only to each other in self-attention, and each group is
    matched one-to-one to the ground truth (the head's
    :class:`GroupHungarianAssigner`, told K through the samples' meta
    information). In eval mode only group 0 is decoded: the same model and
    cost as the plain one.

    Args:
        num_query_groups: Number of query groups K (1: Conditional DETR).
        backbone_channels_last: Feed the backbone channels-last (NHWC)
            images. Same weights and math; convolutions and frozen batch norms
            run faster that way on CPUs (oneDNN). The neck's NHWC output is
            exactly the (bs, HW, C) token layout the transformer wants.
            Backbone and neck weights are then kept channels-last too, the
            layout of their gradients. None (default): on where
            :func:`~mmdet_cdetr.ops.channels_last_backbone` says so for the
            device the runner will put the model on (the CPU), NCHW as in
            mmdet elsewhere.
        **kwargs: :class:`mmdet.models.detectors.DETR`'s arguments.
    """

    def __init__(self,
                 *args,
                 num_query_groups: int = 1,
                 backbone_channels_last: Optional[bool] = None,
                 **kwargs) -> None:
        if num_query_groups < 1:
            raise ConfigError('num_query_groups must be a positive integer, '
                              f'got {num_query_groups}.')
        self.num_query_groups = num_query_groups
        super().__init__(*args, **kwargs)
        if backbone_channels_last is None:
            backbone_channels_last = channels_last_backbone(get_device())
        self.backbone_channels_last = backbone_channels_last
        if backbone_channels_last:
            # Convolutions on NHWC inputs return NHWC weight gradients. DDP
            # lays its gradient buckets out like the parameters: NCHW
            # weights would cost a copy of every gradient on every step
            # ("Grad strides do not match bucket view strides").
            self.backbone.to(memory_format=torch.channels_last)
            self.neck.to(memory_format=torch.channels_last)
        use_fast_kernels(self)
        assigner = getattr(self.bbox_head, 'assigner', None)
        if num_query_groups > 1 and not isinstance(assigner,
                                                   GroupHungarianAssigner):
            raise ConfigError(
                f'num_query_groups={num_query_groups} needs '
                "model.bbox_head.train_cfg.assigner.type='"
                "GroupHungarianAssigner' (matching within each group), got "
                f'{type(assigner).__name__}.')

    @property
    def active_query_groups(self) -> int:
        """Query groups decoded now: all in training, group 0 in eval."""
        return self.num_query_groups if self.training else 1

    def _init_layers(self) -> None:
        self.positional_encoding = SinePositionalEncoding(
            **self.positional_encoding)
        self.encoder = FusedDetrTransformerEncoder(**self.encoder)
        self.decoder = ConditionalDetrTransformerDecoder(**self.decoder)
        self.embed_dims = self.encoder.embed_dims
        self.query_embedding = nn.Embedding(
            self.num_query_groups * self.num_queries, self.embed_dims)
        num_feats = self.positional_encoding.num_feats
        if 2 * num_feats != self.embed_dims:
            raise ConfigError(
                'positional_encoding.num_feats must be half of embed_dims, '
                f'got num_feats={num_feats} and embed_dims={self.embed_dims}.')

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor]:
        if self.backbone_channels_last:
            batch_inputs = batch_inputs.contiguous(
                memory_format=torch.channels_last)
        return super().extract_feat(batch_inputs)

    def forward_transformer(self,
                            img_feats: Tuple[Tensor],
                            batch_data_samples: OptSampleList = None) -> Dict:
        """Encoder and decoder; records in each sample's meta information
        how many query groups were decoded (``num_query_groups``), which the
        head's assigner reads to match within groups."""
        for sample in batch_data_samples or ():
            sample.set_metainfo(
                dict(num_query_groups=self.active_query_groups))
        return super().forward_transformer(img_feats, batch_data_samples)

    def pre_decoder(self, memory: Tensor) -> Tuple[Dict, Dict]:
        """Zero content queries and the learned query positions ``o_q`` of
        the active query groups.

        ``o_q`` is expanded over the batch, not repeated as in mmdet's DETR:
        the decoder sees the stride-0 batch dimension and projects ``o_q``
        once per batch instead of once per image.
        """
        num_groups = self.active_query_groups
        rows = self.query_embedding.weight[:num_groups * self.num_queries]
        query_pos = rows.expand(memory.size(0), -1, -1)
        query = memory.new_zeros(query_pos.shape)
        return dict(
            query_pos=query_pos,
            query=query,
            memory=memory,
            num_query_groups=num_groups), {}

    def forward_decoder(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                        memory_mask: Optional[Tensor], memory_pos: Tensor,
                        num_query_groups: int) -> Dict:
        hidden_states, references = self.decoder(
            query=query,
            key=memory,
            query_pos=query_pos,
            key_pos=memory_pos,
            key_padding_mask=memory_mask,
            num_query_groups=num_query_groups)
        return dict(hidden_states=hidden_states, references=references)
