from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import torch
from mmdet.structures import DetDataSample
from torch import Tensor, nn
from torch.nn import functional as F

from mmdet_cdetr.utils.errors import UserError

# What "the same detections" means for an exported model.
SCORE_TOL = 1e-4
BOX_TOL_PX = 0.05


class ExportMismatchError(UserError, ValueError):
    """The exported model does not reproduce PyTorch's detections."""


def random_image(detector: nn.Module,
                 shape: Tuple[int, int],
                 seed: int = 0) -> Tuple[Tensor, DetDataSample]:
    """A random uint8 image of ``shape`` through the detector's data
    preprocessor: a (1, 3, H, W) input and its data sample."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(
        0, 256, (3, *shape), dtype=torch.uint8, generator=generator)
    sample = DetDataSample(
        metainfo=dict(img_shape=shape, ori_shape=shape, scale_factor=(1, 1)))
    data = detector.data_preprocessor(
        dict(inputs=[image], data_samples=[sample]), False)
    return data['inputs'], data['data_samples'][0]


def compare_detections(
        reference: Tuple[Tensor, Tensor, Tensor],
        exported: Tuple[np.ndarray, np.ndarray]) -> Dict[str, float]:
    """Largest differences between PyTorch's detections (boxes, scores,
    labels of one image) and an exported model's (``dets``, ``labels`` of
    batch 1), in rank order.

    Two candidates whose scores differ by less than :data:`SCORE_TOL` may
    come out in either order, so a rank whose label differs counts as equal
    when a tied rank of the reference has that label; its box is compared
    with the closest such box. Ranks tied with the reference's last kept
    score may hold candidates the reference ranked just outside its top K
    (an untrained model ties thousands of (query, class) pairs at the
    prior): they are counted in ``boundary_ties``, not compared.

    Returns:
        dict: ``scores``, ``boxes_px`` (largest absolute differences),
        ``labels`` (ranks whose label matches no tied reference rank),
        ``boundary_ties`` and ``detections`` (how many ranks there are).
    """
    ref_boxes, ref_scores, ref_labels = (
        t.detach().cpu().double() for t in reference)
    dets = torch.from_numpy(exported[0][0]).double()
    labels = torch.from_numpy(exported[1][0]).double()
    if dets.shape[0] != ref_scores.shape[0]:
        raise ExportMismatchError(
            f'the exported model returns {dets.shape[0]} '
            f'detections, PyTorch {ref_scores.shape[0]}')
    scores, boxes = dets[:, 4], dets[:, :4]
    tied = (scores[:, None] - ref_scores[None]).abs() <= SCORE_TOL
    candidates = tied & (labels[:, None] == ref_labels[None])
    box_diffs = (boxes[:, None] - ref_boxes[None]).abs().amax(-1)
    box_diffs = box_diffs.masked_fill(~candidates, float('inf')).amin(1)
    boundary = scores <= ref_scores.min() + SCORE_TOL
    matched = candidates.any(1) & ~boundary
    return dict(
        scores=(scores - ref_scores).abs().max().item(),
        boxes_px=box_diffs[matched].max().item() if matched.any() else 0.,
        labels=int((~candidates.any(1) & ~boundary).sum()),
        boundary_ties=int(boundary.sum()),
        detections=len(scores))


def _check(diffs: Dict[str, float], name: str) -> None:
    """Raise :class:`ExportMismatchError` when ``diffs`` exceed the
    tolerances."""
    if (diffs['labels'] or diffs['scores'] > SCORE_TOL
            or diffs['boxes_px'] > BOX_TOL_PX):
        raise ExportMismatchError(
            f'the exported model differs from PyTorch on a {name} '
            f'image: {diffs["labels"]} labels, scores by '
            f'{diffs["scores"]:.2g} (tolerance {SCORE_TOL}), boxes by '
            f'{diffs["boxes_px"]:.2g} px (tolerance {BOX_TOL_PX})')


def _predict_alone(detector: nn.Module, inputs: Tensor,
                   sample: DetDataSample) -> Tuple[Tensor, Tensor, Tensor]:
    """PyTorch's boxes, scores and labels of one image run alone."""
    sample.set_metainfo(dict(batch_input_shape=tuple(inputs.shape[-2:])))
    with torch.no_grad():
        pred = detector.predict(
            inputs, [sample], rescale=False)[0].pred_instances
    return pred.bboxes, pred.scores, pred.labels


def verify_export(detector: nn.Module,
                  run: Callable[..., Tuple[np.ndarray, np.ndarray]],
                  shapes: Sequence[Tuple[int, int]],
                  batched: bool = False) -> Dict[str, dict]:
    """Check an exported model against the PyTorch detector's ``predict``
    on a random image of each shape, each run alone in PyTorch; raises
    :class:`ExportMismatchError` naming the shape when detections differ beyond
    :data:`SCORE_TOL` and :data:`BOX_TOL_PX`.

    Args:
        run: The exported model: ``run(inputs)`` for one image, or
            ``run(inputs, img_shape)`` for a padded batch when ``batched``.
        shapes: (height, width) of each image.
        batched: Give the exported model all images at once, zero-padded to
            the largest height and width (the data preprocessor's padding
            of normalised images), with their sizes.

    Returns:
        dict: ``'HxW'`` -> :func:`compare_detections`'s differences.
    """
    detector.eval()
    images = [
        random_image(detector, tuple(shape), seed=i)
        for i, shape in enumerate(shapes)
    ]
    if batched:
        height = max(shape[0] for shape in shapes)
        width = max(shape[1] for shape in shapes)
        batch = torch.cat([
            F.pad(inputs,
                  (0, width - inputs.shape[-1], 0, height - inputs.shape[-2]))
            for inputs, _ in images
        ])
        dets, labels = run(batch, [tuple(shape) for shape in shapes])
        outputs = [(dets[i:i + 1], labels[i:i + 1])
                   for i in range(len(shapes))]
    else:
        outputs = [run(inputs) for inputs, _ in images]
    results = {}
    for shape, (inputs, sample), output in zip(shapes, images, outputs):
        diffs = compare_detections(
            _predict_alone(detector, inputs, sample), output)
        name = f'{shape[0]}x{shape[1]}'
        _check(diffs, name)
        results[name] = diffs
    return results
