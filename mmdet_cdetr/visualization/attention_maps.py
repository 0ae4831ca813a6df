"""Cross-attention maps of Conditional DETR's decoder, per detection and head.

The paper's Figure 1: each head of a decoder layer's cross-attention attends
to one extremity of the object (a band around its left, right, top or bottom
edge) or to a region inside its box. Here the attention of the query behind
each top-scoring detection is taken from the plain (weight-keeping) path of
:class:`ConditionalAttention` and drawn over the image, one panel per head.

Three parts can be shown, as the paper separates them: ``combined`` is the
attention the model uses, ``softmax(c_q . c_k + p_q . p_k)``; ``content``
and ``spatial`` are ``softmax(c_q . c_k)`` and ``softmax(p_q . p_k)`` alone,
each over the same (unpadded) keys. In the first decoder layer the content
part also holds the query and key positions (``c_q += o_q``, ``c_k += p_k``).
"""
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from mmcv.transforms import Compose
from mmdet.apis import init_detector
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmdet.utils import get_test_pipeline_cfg
from mmengine.config import Config
from torch import Tensor, nn

from mmdet_cdetr.converters.checkpoint_format import check_checkpoint
from mmdet_cdetr.models.layers import ConditionalAttention
from mmdet_cdetr.registry import DATASETS
from mmdet_cdetr.utils import init_weights_quietly
from mmdet_cdetr.utils.checkpoint_file import check_checkpoint_fits
from mmdet_cdetr.utils.errors import ArgumentError

ATTENTION_PARTS = ('combined', 'content', 'spatial')


@dataclass
class DetectionAttention:
    """A detection and where its query looked in one decoder layer.

    Attributes:
        query_index: The decoder query that made the detection.
        label: Class index.
        score: Sigmoid class score.
        bbox: (x1, y1, x2, y2) in the original image's pixels.
        maps: (num_heads, h, w) attention over the unpadded feature map;
            each head's map sums to 1.
    """
    query_index: int
    label: int
    score: float
    bbox: np.ndarray
    maps: np.ndarray


def _check_part(part: str) -> None:
    if part not in ATTENTION_PARTS:
        raise ArgumentError(f'part must be one of {ATTENTION_PARTS}, '
                            f'got {part!r}')


@contextmanager
def recording_attention(attention: ConditionalAttention) -> Iterator[dict]:
    """Take the plain attention path of ``attention`` while in the block and
    yield the dict it records into; the fused path is restored afterwards
    and the module keeps no reference to the recorded tensors."""
    recorded: dict = {}
    attention.record_attention, attention.recorded = True, recorded
    try:
        yield recorded
    finally:
        attention.record_attention, attention.recorded = False, {}


def attention_weights(recorded: dict, part: str,
                      key_padding_mask: Optional[Tensor]) -> Tensor:
    """Attention weights (bs, num_heads, num_queries, num_keys) of ``part``,
    normalised over the keys that are not padding.

    Args:
        recorded: What :class:`ConditionalAttention` recorded in
            cross-attention (``weights``, ``content_logits``,
            ``spatial_logits``).
        part: One of :data:`ATTENTION_PARTS`.
        key_padding_mask: True at padded keys, (bs, num_keys), or None.
    """
    _check_part(part)
    if part == 'combined':
        return recorded['weights']
    logits = recorded[f'{part}_logits']
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask[:, None, None, :],
                                    float('-inf'))
    return logits.softmax(dim=-1)


def load_detector(config: Union[str, Config],
                  checkpoint: Optional[str] = None,
                  device: str = 'cpu') -> nn.Module:
    """mmdet's ``init_detector``; without a checkpoint the weights are
    initialised as for training and classes are named after the config's
    data set (``init_detector`` would name COCO's)."""
    if checkpoint is not None:
        check_checkpoint(checkpoint)
        model = init_detector(config, checkpoint, device=device)
        check_checkpoint_fits(model, checkpoint)
        return model
    # init_detector warns that it names COCO's classes; ours are set below.
    with warnings.catch_warnings(record=True):
        model = init_detector(config, None, device=device)
    init_weights_quietly(model)
    dataset_cfg = dict(model.cfg.test_dataloader.dataset, lazy_init=True)
    model.dataset_meta = DATASETS.build(dataset_cfg).metainfo
    return model


@dataclass
class RecordedForward:
    """A forward pass over one image with one layer's attention recorded.

    Attributes:
        cls_scores: Logits of every decoder layer, (num_layers, 1,
            num_queries, num_classes).
        bbox_preds: Normalised (cx, cy, w, h), (num_layers, 1, num_queries,
            4).
        recorded: What the chosen layer's cross-attention recorded.
        key_padding_mask: True at padded keys, (1, h * w), or None.
        feat_shape: (h, w) of the feature map (the keys).
        img_meta: Meta information of the image (shapes, scale factor).
    """
    cls_scores: Tensor
    bbox_preds: Tensor
    recorded: dict
    key_padding_mask: Optional[Tensor]
    feat_shape: Tuple[int, int]
    img_meta: dict


def forward_recording_attention(model: nn.Module, image_path: str,
                                layer: int) -> RecordedForward:
    """Run the test pipeline and the model on one image, recording the
    cross-attention of decoder ``layer`` (1 = first)."""
    layers = model.decoder.layers
    if not 1 <= layer <= len(layers):
        raise ArgumentError(f'layer must be in 1..{len(layers)} (the decoder '
                            f'has {len(layers)} layers), got {layer}')
    pipeline = Compose(get_test_pipeline_cfg(model.cfg))
    data = pipeline(dict(img_path=image_path, img_id=0))
    batch = model.data_preprocessor(
        dict(inputs=[data['inputs']], data_samples=[data['data_samples']]),
        False)
    inputs, samples = batch['inputs'], batch['data_samples']
    with torch.no_grad(), recording_attention(
            layers[layer - 1].cross_attn) as recorded:
        feats = model.extract_feat(inputs)
        cls_scores, bbox_preds = model.bbox_head(
            **model.forward_transformer(feats, samples))
        # The padding mask the transformer saw (None without padding).
        mask = model.pre_transformer(feats, samples)[1]['memory_mask']
    return RecordedForward(cls_scores, bbox_preds, recorded, mask,
                           tuple(feats[-1].shape[-2:]), samples[0].metainfo)


def collect_attention(model: nn.Module,
                      image_path: str,
                      layer: int,
                      part: str = 'combined',
                      topk: int = 3) -> List[DetectionAttention]:
    """Detect in one image and keep, for the ``topk`` best-scoring queries,
    the cross-attention of decoder ``layer`` (1 = first).

    Detections are ranked by each query's best class score, so every
    detection comes from a different query.
    """
    _check_part(part)
    out = forward_recording_attention(model, image_path, layer)
    weights = attention_weights(out.recorded, part, out.key_padding_mask)[0]
    weights = weights.unflatten(-1, out.feat_shape)
    if out.key_padding_mask is not None:
        valid = ~out.key_padding_mask[0].view(out.feat_shape)
        weights = weights[..., :int(valid[:, 0].sum()), :int(valid[0].sum())]

    scores, labels = out.cls_scores[-1, 0].sigmoid().max(dim=-1)
    scores, queries = scores.topk(min(topk, len(scores)))
    bboxes = _to_image_pixels(out.bbox_preds[-1, 0, queries], out.img_meta)
    return [
        DetectionAttention(
            query_index=int(query),
            label=int(labels[query]),
            score=float(score),
            bbox=bbox.cpu().numpy(),
            maps=weights[:, query].cpu().numpy())
        for query, score, bbox in zip(queries, scores, bboxes)
    ]


def _to_image_pixels(bbox_preds: Tensor, img_meta: dict) -> Tensor:
    """Normalised (cx, cy, w, h) -> (x1, y1, x2, y2) in the original image,
    as the head scales its predictions."""
    img_h, img_w = img_meta['img_shape'][:2]
    bboxes = bbox_cxcywh_to_xyxy(bbox_preds) * bbox_preds.new_tensor(
        [img_w, img_h, img_w, img_h])
    bboxes /= bboxes.new_tensor(img_meta['scale_factor']).repeat(2)
    ori_h, ori_w = img_meta['ori_shape'][:2]
    bboxes[:, 0::2] = bboxes[:, 0::2].clamp(0, ori_w)
    bboxes[:, 1::2] = bboxes[:, 1::2].clamp(0, ori_h)
    return bboxes


def draw_attention_grid(image: np.ndarray,
                        detection: DetectionAttention,
                        title: str,
                        out_file: str,
                        columns: int = 4,
                        panel_inches: float = 2.0) -> None:
    """Save one panel per head: ``image`` (RGB, shown in grey so that colour
    means attention), the head's attention map (scaled to its own maximum,
    so that weak heads stay visible; transparent where it is low) and the
    predicted box. Panel titles give each map's peak weight (a uniform map
    would have 1 / number of keys)."""
    num_heads = len(detection.maps)
    columns = min(columns, num_heads)
    rows = math.ceil(num_heads / columns)
    img_h, img_w = image.shape[:2]
    grey = image.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    fig = Figure(
        figsize=(columns * panel_inches,
                 rows * (panel_inches * img_h / img_w + 0.3) + 0.4))
    axes = fig.subplots(rows, columns, squeeze=False).flat
    extent = (0, img_w, img_h, 0)
    x1, y1, x2, y2 = detection.bbox
    for head, ax in enumerate(axes):
        ax.axis('off')
        if head >= num_heads:
            continue
        attention = detection.maps[head] / detection.maps[head].max()
        heat = colormaps['jet'](attention)
        heat[..., 3] = 0.8 * attention  # opaque where the head attends
        ax.imshow(grey, cmap='gray', vmin=0, vmax=255, extent=extent)
        ax.imshow(heat, extent=extent, interpolation='bilinear')
        ax.add_patch(
            Rectangle((x1, y1),
                      x2 - x1,
                      y2 - y1,
                      fill=False,
                      edgecolor='white',
                      linewidth=1.5))
        ax.set_title(
            f'head {head + 1} (peak {detection.maps[head].max():.2f})',
            fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
