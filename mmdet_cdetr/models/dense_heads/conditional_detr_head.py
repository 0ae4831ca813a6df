import logging
from typing import List, Tuple

import torch
from mmdet.models.dense_heads import DETRHead
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.structures import SampleList
from mmdet.utils import InstanceList
from mmengine.logging import print_log
from mmengine.model import bias_init_with_prob
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.errors import CheckpointError
from .top_k_detections import boxes_to_original, top_k_detections


@MODELS.register_module()
class ConditionalDETRHead(DETRHead):
    """Head of Conditional DETR.

    Classification is a linear layer with sigmoid focal loss (no background
    logit; bias from a 0.01 prior). Boxes are predicted relative to the
    decoder's reference points:
    ``box = sigmoid(MLP(f) + [inverse_sigmoid(s), 0, 0])`` with the last MLP
    layer initialised to zero, so training starts with boxes centred on the
    reference points.

    Unlike mmdet's DETR heads it also predicts when
    ``num_queries * num_classes < max_per_img``, and refuses a checkpoint
    whose classifier was made for a different number of classes unless
    ``reset_mismatched_classifier`` is set (fine-tuning: set by
    :class:`FineTuneHook` while a training run loads ``load_from``); then
    that classifier is skipped and ours re-initialised.
    """

    reset_mismatched_classifier = False

    def init_weights(self) -> None:
        super().init_weights()
        self._init_classifier_bias()
        nn.init.zeros_(self.fc_reg.weight)
        nn.init.zeros_(self.fc_reg.bias)

    def forward(self, hidden_states: Tensor,
                references: Tensor) -> Tuple[Tensor, Tensor]:
        """Predict from every decoder layer.

        Args:
            hidden_states: (num_layers, bs, num_queries, dim).
            references: (bs, num_queries, 2), (x, y) in [0, 1].

        Returns:
            tuple: classification logits (num_layers, bs, num_queries,
            num_classes) and boxes (num_layers, bs, num_queries, 4) as
            normalised (cx, cy, w, h).
        """
        offsets = self.fc_reg(self.activate(self.reg_ffn(hidden_states)))
        reference_logits = inverse_sigmoid(references)
        reference_logits = torch.cat([
            reference_logits,
            reference_logits.new_zeros(reference_logits.shape)
        ], -1)
        bbox_preds = (offsets + reference_logits).sigmoid()
        return self.fc_cls(hidden_states), bbox_preds

    def loss(self, hidden_states: Tensor, references: Tensor,
             batch_data_samples: SampleList) -> dict:
        gt_instances, img_metas = _split_samples(batch_data_samples)
        outs = self(hidden_states, references)
        return self.loss_by_feat(*outs, gt_instances, img_metas)

    def loss_and_predict(
            self, hidden_states: Tensor, references: Tensor,
            batch_data_samples: SampleList) -> Tuple[dict, InstanceList]:
        gt_instances, img_metas = _split_samples(batch_data_samples)
        outs = self(hidden_states, references)
        losses = self.loss_by_feat(*outs, gt_instances, img_metas)
        return losses, self.predict_by_feat(*outs, batch_img_metas=img_metas)

    def predict(self,
                hidden_states: Tensor,
                references: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> InstanceList:
        img_metas = [sample.metainfo for sample in batch_data_samples]
        outs = self(hidden_states[-1:], references)
        return self.predict_by_feat(
            *outs, batch_img_metas=img_metas, rescale=rescale)

    def _predict_by_feat_single(self,
                                cls_score: Tensor,
                                bbox_pred: Tensor,
                                img_meta: dict,
                                rescale: bool = True) -> InstanceData:
        """Top-k over all (query, class) scores, boxes scaled to the image.

        Args:
            cls_score: Logits of the last layer, (num_queries, num_classes).
            bbox_pred: Normalised (cx, cy, w, h), (num_queries, 4).
            img_meta: Meta information with ``img_shape`` (and
                ``scale_factor`` when ``rescale``).
            rescale: Return boxes in the original image's pixels.
        """
        max_per_img = self.test_cfg.get('max_per_img', len(cls_score))
        img_h, img_w = img_meta['img_shape'][:2]
        bboxes, scores, labels = top_k_detections(
            cls_score, bbox_pred, bbox_pred.new_tensor([img_w, img_h]),
            max_per_img, self.loss_cls.use_sigmoid)
        if rescale:
            bboxes = boxes_to_original(bboxes, img_meta['scale_factor'])
        results = InstanceData()
        results.bboxes, results.scores, results.labels = bboxes, scores, labels
        return results

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args,
                              **kwargs) -> None:
        key = prefix + 'fc_cls.weight'
        if key in state_dict and (state_dict[key].shape
                                  != self.fc_cls.weight.shape):
            if not self.reset_mismatched_classifier:
                raise CheckpointError(
                    f'Checkpoint key {key!r} has shape '
                    f'{tuple(state_dict[key].shape)}, but the model built '
                    f'from the config has {tuple(self.fc_cls.weight.shape)}:'
                    f' the checkpoint has {state_dict[key].shape[0]} class '
                    f'logits and the config num_classes={self.num_classes}.'
                    ' Set model.bbox_head.num_classes to match, or convert '
                    'the checkpoint (tools/model_converters/).')
            self._skip_classifier(state_dict, prefix + 'fc_cls.')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _init_classifier_bias(self) -> None:
        """The focal loss's prior: every class starts at probability 0.01."""
        if self.loss_cls.use_sigmoid:
            nn.init.constant_(self.fc_cls.bias, bias_init_with_prob(0.01))

    def _skip_classifier(self, state_dict: dict, fc_prefix: str) -> None:
        """Leave the checkpoint's classifier out and start ours afresh (the
        focal prior bias), as fine-tuning onto another class set needs."""
        skipped = [
            f'{name} {tuple(state_dict.pop(name).shape)} -> '
            f'{tuple(param.shape)}'
            for name, param in ((fc_prefix + 'weight', self.fc_cls.weight),
                                (fc_prefix + 'bias', self.fc_cls.bias))
            if name in state_dict
        ]
        self.fc_cls.reset_parameters()
        self._init_classifier_bias()
        print_log(
            'Fine-tuning onto another class set: the checkpoint\'s '
            f'classifier is not loaded and starts afresh ({"; ".join(skipped)}'
            f'; num_classes={self.num_classes})',
            logger='current',
            level=logging.WARNING)


def _split_samples(
        batch_data_samples: SampleList) -> Tuple[InstanceList, List[dict]]:
    """Ground truth and meta information of each image."""
    return ([sample.gt_instances for sample in batch_data_samples],
            [sample.metainfo for sample in batch_data_samples])
