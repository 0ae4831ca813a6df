from typing import Tuple

import torch
from mmdet.structures import DetDataSample
from torch import Tensor, nn
from torch.onnx.operators import shape_as_tensor

from mmdet_cdetr.models.dense_heads import top_k_detections


class End2EndDetector(nn.Module):
    """A DETR-family detector as one tensor-in, tensors-out function: the
    graph that ``tools/deployment/pytorch2onnx.py`` exports.

    Input and outputs follow mmdeploy's detection convention, so deployment
    code written for it can use the exported file:

    * ``input``: (1, 3, H, W) float32, the image after the config's data
      preprocessor (normalised, RGB); the whole input is the image, there is
      no padding mask;
    * ``dets``: (1, K, 5) float32, (x1, y1, x2, y2, score) in input-image
      pixels, clipped to the image, best first;
    * ``labels``: (1, K) int64;

    with K = ``test_cfg.max_per_img`` (at most num_queries x num_classes).
    The detections are those of the head's ``predict`` with
    ``rescale=False``: both call :func:`top_k_detections`.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        head = detector.bbox_head
        self.max_per_img = head.test_cfg.get('max_per_img',
                                             detector.num_queries)
        self.use_sigmoid = head.loss_cls.use_sigmoid

    def forward(self, inputs: Tensor) -> Tuple[Tensor, Tensor]:
        height, width = inputs.shape[-2:]
        # The image fills the input: mmdet's DETR then builds no padding
        # mask, whatever the size, so no branch freezes at trace time. Set
        # field by field: ``metainfo=`` deep-copies, which torch 2.1's
        # tracer refuses for the traced sizes.
        sample = DetDataSample()
        for name in ('img_shape', 'batch_input_shape'):
            sample.set_field((height, width), name, field_type='metainfo')
        head_inputs = self.detector.forward_transformer(
            self.detector.extract_feat(inputs), [sample])
        cls_scores, bbox_preds = self.detector.bbox_head(
            head_inputs['hidden_states'][-1:], head_inputs['references'])
        # Width and height as a tensor, so they stay dynamic when traced.
        image_wh = shape_as_tensor(inputs)[2:].flip(0)
        # The last decoder layer's predictions for the one image.
        cls_score, bbox_pred = cls_scores[-1, 0], bbox_preds[-1, 0]
        bboxes, scores, labels = top_k_detections(cls_score, bbox_pred,
                                                  image_wh, self.max_per_img,
                                                  self.use_sigmoid)
        dets = torch.cat([bboxes, scores[:, None]], dim=-1)
        return dets[None], labels[None]
