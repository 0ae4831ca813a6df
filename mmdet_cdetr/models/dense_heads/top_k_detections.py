from typing import Sequence, Tuple

from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from torch import Tensor


def top_k_detections(cls_score: Tensor, bbox_pred: Tensor, image_wh: Tensor,
                     max_per_img: int,
                     use_sigmoid: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """The ``max_per_img`` best detections of one image, boxes in pixels.

    Shared by the head's ``predict`` and the ONNX export, so both return the
    same detections. Written for tracing: the image size is a tensor (it
    stays dynamic in an exported graph) and no branch depends on it.

    Args:
        cls_score: Logits of the last decoder layer, (num_queries,
            num_classes) (plus a background logit without ``use_sigmoid``).
        bbox_pred: Normalised (cx, cy, w, h), (num_queries, 4).
        image_wh: (2,) float, width and height of the input image.
        max_per_img: How many detections to keep (at most all candidates).
        use_sigmoid: Top-k over all (query, class) sigmoid scores, as
            Conditional DETR; otherwise softmax and the best class per query.

    Returns:
        tuple: boxes (k, 4) as (x1, y1, x2, y2) in input-image pixels,
        clipped to the image; scores (k,); labels (k,) int64.
    """
    if use_sigmoid:
        num_classes = cls_score.size(-1)
        scores = cls_score.sigmoid().flatten()
        scores, indexes = scores.topk(min(max_per_img, scores.numel()))
        labels = indexes % num_classes
        bbox_pred = bbox_pred[indexes // num_classes]
    else:
        scores, labels = cls_score.softmax(-1)[..., :-1].max(-1)
        scores, indexes = scores.topk(min(max_per_img, scores.numel()))
        labels, bbox_pred = labels[indexes], bbox_pred[indexes]
    scale = image_wh.to(bbox_pred.dtype).repeat(2)
    bboxes = (bbox_cxcywh_to_xyxy(bbox_pred) * scale).clamp(min=0)
    return bboxes.minimum(scale), scores, labels


def boxes_to_original(bboxes: Tensor, scale_factor: Sequence[float]) -> Tensor:
    """Boxes in input-image pixels -> original-image pixels (``scale_factor``
    is the test pipeline's (w_scale, h_scale))."""
    return bboxes / bboxes.new_tensor(scale_factor).repeat(2)
