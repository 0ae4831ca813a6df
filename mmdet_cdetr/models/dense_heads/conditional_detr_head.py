import logging
from typing import Dict, List, Tuple

import torch
from mmdet.models.dense_heads import DETRHead
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmdet.utils import InstanceList, OptInstanceList, reduce_mean
from mmengine.dist import broadcast
from mmengine.logging import print_log
from mmengine.model import bias_init_with_prob
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.errors import CheckpointError, ConfigError
from ..layers.precision import autocast_off
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

    Losses and matching follow the official ``SetCriterion``: every loss
    term of every decoder layer (focal class loss included) is divided by
    the number of ground-truth boxes (times the query groups) averaged over
    all processes, computed once per step. The head's layers, the matching
    and the losses run in float32 under autocast too: the box logits, the
    Hungarian costs (scipy takes no bf16, and fp16 costs overflow) and GIoU
    need the precision, and they cost little next to the backbone.

    Unlike mmdet's DETR heads it also predicts when
    ``num_queries * num_classes < max_per_img``, and refuses a checkpoint
    whose classifier was made for a different number of classes unless
    ``reset_mismatched_classifier`` is set (fine-tuning: set by
    :class:`FineTuneHook` while a training run loads ``load_from``); then
    that classifier is skipped and ours re-initialised.
    """

    reset_mismatched_classifier = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.loss_cls.use_sigmoid:
            raise ConfigError(
                'ConditionalDETRHead needs a sigmoid classification loss '
                '(loss_cls.use_sigmoid=True, the focal loss of Conditional '
                'DETR): its losses are normalised as the official focal '
                'criterion.')

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
        with autocast_off(hidden_states):
            hidden_states = hidden_states.float()
            offsets = self.fc_reg(self.activate(self.reg_ffn(hidden_states)))
            reference_logits = inverse_sigmoid(references.float())
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

    def loss_by_feat(
        self,
        all_layers_cls_scores: Tensor,
        all_layers_bbox_preds: Tensor,
        batch_gt_instances: InstanceList,
        batch_img_metas: List[dict],
        batch_gt_instances_ignore: OptInstanceList = None
    ) -> Dict[str, Tensor]:
        """Losses of every decoder layer (mmdet's names: ``loss_cls`` ...
        for the last, ``d0.loss_cls`` ... for the others).

        Args:
            all_layers_cls_scores: (num_layers, bs, num_queries,
                num_classes) logits (float32, as :meth:`forward` returns
                them also under autocast).
            all_layers_bbox_preds: (num_layers, bs, num_queries, 4)
                normalised (cx, cy, w, h).
            batch_gt_instances: Ground truth of each image.
            batch_img_metas: Meta information of each image
                (``num_query_groups`` among it in Group DETR).
            batch_gt_instances_ignore: Not supported (None).
        """
        if batch_gt_instances_ignore is not None:
            raise ValueError('ConditionalDETRHead does not support ignored '
                             'ground-truth boxes.')
        with autocast_off(all_layers_cls_scores):
            num_boxes = self.num_boxes(batch_gt_instances, batch_img_metas,
                                       all_layers_cls_scores.device)
            layer_losses = [
                self.loss_by_feat_single(cls_scores, bbox_preds,
                                         batch_gt_instances, batch_img_metas,
                                         num_boxes) for cls_scores, bbox_preds
                in zip(all_layers_cls_scores, all_layers_bbox_preds)
            ]
        losses = {}
        for layer, values in enumerate(layer_losses):
            prefix = ('' if layer == len(layer_losses) - 1 else f'd{layer}.')
            for name, value in zip(('loss_cls', 'loss_bbox', 'loss_iou'),
                                   values):
                losses[prefix + name] = value
        return losses

    @staticmethod
    def num_boxes(batch_gt_instances: InstanceList,
                  batch_img_metas: List[dict], device: torch.device) -> float:
        """The official loss normaliser: ground-truth boxes times query
        groups (each box is matched once per group), averaged over the
        processes (one all-reduce), at least 1."""
        local = sum(
            len(gt) * meta.get('num_query_groups', 1)
            for gt, meta in zip(batch_gt_instances, batch_img_metas))
        mean = reduce_mean(torch.tensor(float(local), device=device))
        return max(mean.item(), 1.)

    def loss_by_feat_single(self, cls_scores: Tensor, bbox_preds: Tensor,
                            batch_gt_instances: InstanceList,
                            batch_img_metas: List[dict],
                            num_boxes: float) -> Tuple[Tensor, Tensor, Tensor]:
        """Class, L1 and GIoU losses of one decoder layer, each summed over
        the batch and divided by ``num_boxes`` (:meth:`num_boxes`).

        Args:
            cls_scores: (bs, num_queries, num_classes) logits.
            bbox_preds: (bs, num_queries, 4) normalised (cx, cy, w, h).
            batch_gt_instances: Ground truth of each image.
            batch_img_metas: Meta information of each image.
            num_boxes: The normaliser.
        """
        (labels, label_weights, bbox_targets, bbox_weights, _,
         _) = self.get_targets(
             list(cls_scores), list(bbox_preds), batch_gt_instances,
             batch_img_metas)
        labels, label_weights, bbox_targets, bbox_weights = (
            torch.cat(targets)
            for targets in (labels, label_weights, bbox_targets, bbox_weights))
        loss_cls = self.loss_cls(
            cls_scores.flatten(0, 1),
            labels,
            label_weights,
            avg_factor=num_boxes)
        # GIoU is computed in pixels: DETR's targets are normalised by the
        # size of each image, not of the padded batch.
        factors = torch.cat([
            bbox_preds.new_tensor([w, h, w, h]).expand(bbox_preds.size(1), 4)
            for h, w in (meta['img_shape'][:2] for meta in batch_img_metas)
        ])
        bbox_preds = bbox_preds.flatten(0, 1)
        loss_iou = self.loss_iou(
            bbox_cxcywh_to_xyxy(bbox_preds) * factors,
            bbox_cxcywh_to_xyxy(bbox_targets) * factors,
            bbox_weights,
            avg_factor=num_boxes)
        loss_bbox = self.loss_bbox(
            bbox_preds, bbox_targets, bbox_weights, avg_factor=num_boxes)
        return loss_cls, loss_bbox, loss_iou

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
        nn.init.constant_(self.fc_cls.bias, bias_init_with_prob(0.01))

    def _skip_classifier(self, state_dict: dict, fc_prefix: str) -> None:
        """Leave the checkpoint's classifier out and start ours afresh (the
        focal prior bias), as fine-tuning onto another class set needs.

        The runner loads ``load_from`` after DDP has broadcast the weights,
        and ranks may draw differently (``diff_rank_seed``): every rank takes
        rank 0's new classifier, as mmengine does after ``init_weights``."""
        skipped = [
            f'{name} {tuple(state_dict.pop(name).shape)} -> '
            f'{tuple(param.shape)}'
            for name, param in ((fc_prefix + 'weight', self.fc_cls.weight),
                                (fc_prefix + 'bias', self.fc_cls.bias))
            if name in state_dict
        ]
        self.fc_cls.reset_parameters()
        self._init_classifier_bias()
        with torch.no_grad():
            for param in self.fc_cls.parameters():
                broadcast(param)
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
