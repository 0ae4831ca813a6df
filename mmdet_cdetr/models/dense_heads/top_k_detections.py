from typing import Sequence, Tuple

import torch
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from torch import Tensor


def top_k_detections(cls_score: Tensor, bbox_pred: Tensor, image_wh: Tensor,
                     max_per_img: int,
                     use_sigmoid: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """The ``max_per_img`` best detections of one image (or of each image of
    a batch, given leading batch dimensions), boxes in pixels.

    Shared by the head's ``predict`` and the ONNX exports, so all return the
    same detections. Written for tracing: the image size is a tensor (it
    stays dynamic in an exported graph) and no branch depends on it.

    Args:
        cls_score: Logits of the last decoder layer, ([B,] num_queries,
            num_classes) (plus a background logit without ``use_sigmoid``).
        bbox_pred: Normalised (cx, cy, w, h), ([B,] num_queries, 4).
        image_wh: ([B,] 2) float, width and height of each input image.
        max_per_img: How many detections to keep (at most all candidates).
        use_sigmoid: Top-k over all (query, class) sigmoid scores, as
            Conditional DETR; otherwise softmax and the best class per query.

    Returns:
        tuple: boxes ([B,] k, 4) as (x1, y1, x2, y2) in input-image pixels,
        clipped to the image; scores ([B,] k); labels ([B,] k) int64.
    """
    if use_sigmoid:
        num_classes = cls_score.size(-1)
        scores = cls_score.sigmoid().flatten(-2)
        scores, indexes = scores.topk(min(max_per_img, scores.size(-1)))
        labels = indexes % num_classes
        queries = indexes // num_classes
    else:
        scores, labels = cls_score.softmax(-1)[..., :-1].max(-1)
        scores, queries = scores.topk(min(max_per_img, scores.size(-1)))
        labels = labels.gather(-1, queries)
    bbox_pred = bbox_pred.gather(
        -2,
        queries.unsqueeze(-1).expand(*queries.shape, bbox_pred.size(-1)))
    image_wh = image_wh.to(bbox_pred.dtype)
    scale = torch.cat([image_wh, image_wh], dim=-1).unsqueeze(-2)
    bboxes = (bbox_cxcywh_to_xyxy(bbox_pred) * scale).clamp(min=0)
    return bboxes.minimum(scale), scores, labels


def boxes_to_original(bboxes: Tensor, scale_factor: Sequence[float]) -> Tensor:
    """Boxes in input-image pixels -> original-image pixels (``scale_factor``
    is the test pipeline's (w_scale, h_scale))."""
    return bboxes / bboxes.new_tensor(scale_factor).repeat(2)
