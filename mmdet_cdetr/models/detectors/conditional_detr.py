from typing import Dict, Optional, Tuple

import torch
from mmdet.models.detectors import DETR
from mmdet.models.layers import SinePositionalEncoding
from mmdet.structures import OptSampleList, SampleList
from torch import Tensor, nn

from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.errors import ConfigError
from ..layers import (ConditionalDetrTransformerDecoder,
                      SdpaDetrTransformerEncoder)
from ..task_modules import GroupHungarianAssigner


@MODELS.register_module()
class ConditionalDETR(DETR):
    """Conditional DETR (Meng et al., ICCV 2021) on mmdet's DETR skeleton.

    Backbone, neck, sine positional encoding and encoder are DETR's (the
    encoder as :class:`SdpaDetrTransformerEncoder`: same layers and
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
        **kwargs: :class:`mmdet.models.detectors.DETR`'s arguments. With
            ``test_cfg.batch_independent=True`` inference computes each
            image's backbone features at the image's own size and pads the
            features instead of the images, with the transformer's padding
            mask at exactly each image's feature extent: every image then
            gets the detections it gets alone, whatever else is in its
            batch. Without it (mmdet's way) the backbone reads the batch
            padding near each image's bottom and right edges and the mask
            is resampled from the image size, so results depend on the
            batch. (A ``test_cfg`` key, which mmdet's heads ignore, so that
            configs of mmdet's models can inherit ours.)
    """

    def __init__(self, *args, num_query_groups: int = 1, **kwargs) -> None:
        if num_query_groups < 1:
            raise ConfigError('num_query_groups must be a positive integer, '
                              f'got {num_query_groups}.')
        self.num_query_groups = num_query_groups
        super().__init__(*args, **kwargs)
        self.batch_independent_inference = bool(
            (self.test_cfg or {}).get('batch_independent', False))
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
        self.encoder = SdpaDetrTransformerEncoder(**self.encoder)
        self.decoder = ConditionalDetrTransformerDecoder(**self.decoder)
        self.embed_dims = self.encoder.embed_dims
        self.query_embedding = nn.Embedding(
            self.num_query_groups * self.num_queries, self.embed_dims)
        num_feats = self.positional_encoding.num_feats
        if 2 * num_feats != self.embed_dims:
            raise ConfigError(
                'positional_encoding.num_feats must be half of embed_dims, '
                f'got num_feats={num_feats} and embed_dims={self.embed_dims}.')

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """mmdet's ``predict``, with features computed per image where
        ``batch_independent_inference`` asks for it and the images of the
        batch differ in size."""
        if not (self.batch_independent_inference
                and _sizes_differ(batch_data_samples)):
            return super().predict(batch_inputs, batch_data_samples, rescale)
        img_feats = self.extract_feat_per_image(batch_inputs,
                                                batch_data_samples)
        head_inputs = self.forward_transformer(img_feats, batch_data_samples)
        results = self.bbox_head.predict(
            **head_inputs,
            rescale=rescale,
            batch_data_samples=batch_data_samples)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def extract_feat_per_image(
            self, batch_inputs: Tensor,
            batch_data_samples: SampleList) -> Tuple[Tensor]:
        """Each image's neck features from its own pixels (``img_shape``),
        zero-padded to one batch; each sample records its valid feature
        extent as ``feat_valid_shape`` for :meth:`pre_transformer`."""
        feats = []
        for index, sample in enumerate(batch_data_samples):
            height, width = sample.img_shape[:2]
            feat = self.extract_feat(batch_inputs[index:index +
                                                  1, :, :height, :width])[-1]
            sample.set_metainfo(dict(feat_valid_shape=tuple(feat.shape[-2:])))
            feats.append(feat[0])
        height = max(feat.size(-2) for feat in feats)
        width = max(feat.size(-1) for feat in feats)
        padded = feats[0].new_zeros(
            len(feats), feats[0].size(0), height, width)
        for index, feat in enumerate(feats):
            padded[index, :, :feat.size(-2), :feat.size(-1)] = feat
        return (padded, )

    def pre_transformer(
            self,
            img_feats: Tuple[Tensor],
            batch_data_samples: OptSampleList = None) -> Tuple[Dict, Dict]:
        """mmdet's DETR inputs of the transformer; with features padded per
        image (:meth:`extract_feat_per_image`), the padding mask and sine
        positions follow each image's exact feature extent."""
        extents = [
            sample.metainfo.get('feat_valid_shape')
            for sample in batch_data_samples or ()
        ]
        if not extents or None in extents:
            return super().pre_transformer(img_feats, batch_data_samples)
        feat = img_feats[-1]
        masks = torch.ones(
            feat.shape[:1] + feat.shape[-2:],
            dtype=torch.bool,
            device=feat.device)
        for index, (height, width) in enumerate(extents):
            masks[index, :height, :width] = False
        pos_embed = self.positional_encoding(masks)
        feat = feat.flatten(2).transpose(1, 2)
        pos_embed = pos_embed.flatten(2).transpose(1, 2)
        masks = masks.flatten(1)
        return (dict(feat=feat, feat_mask=masks, feat_pos=pos_embed),
                dict(memory_mask=masks, memory_pos=pos_embed))

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


def _sizes_differ(batch_data_samples: SampleList) -> bool:
    """Whether some image of the batch is smaller than the padded batch."""
    return any(
        tuple(sample.img_shape[:2]) != tuple(sample.batch_input_shape)
        for sample in batch_data_samples)
