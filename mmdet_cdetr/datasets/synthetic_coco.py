"""A seeded, COCO-format data set of simple shapes for demos and tests.

No data set can be downloaded on our machines, so the demo, the tests and
the convergence study train on this. Each class is a shape with its own hue
range, drawn on a noisy background; objects are large enough for a small
from-scratch backbone to localise them in a few minutes.
"""
import json
import os.path as osp
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

CLASSES = ('square', 'circle', 'triangle')
# Hue (OpenCV's 0-179 range) centre of each class.
_HUES = (0, 60, 120)


def _draw(img: np.ndarray, label: int, box: Tuple[int, int, int, int],
          rng: np.random.Generator) -> None:
    x1, y1, x2, y2 = box
    hue = (_HUES[label] + rng.integers(-10, 11)) % 180
    hsv = np.uint8([[[hue, rng.integers(170, 256), rng.integers(170, 256)]]])
    color = tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
    if CLASSES[label] == 'square':
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), color, thickness=-1)
    elif CLASSES[label] == 'circle':
        centre = ((x1 + x2) / 2, (y1 + y2) / 2)
        cv2.ellipse(img, (centre, (x2 - x1, y2 - y1), 0), color, thickness=-1)
    else:
        pts = np.array([[(x1 + x2) // 2, y1], [x1, y2 - 1], [x2 - 1, y2 - 1]])
        cv2.fillPoly(img, [pts.astype(np.int32)], color)


def _overlaps(box: Sequence[int], boxes: List[Sequence[int]],
              max_iou: float) -> bool:
    for other in boxes:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        area = ((box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) *
                (other[3] - other[1]) - inter)
        if inter / area > max_iou:
            return True
    return False


def make_image(rng: np.random.Generator, img_size: int, max_objects: int,
               min_size: float, max_size: float,
               empty_prob: float) -> Tuple[np.ndarray, List[Dict]]:
    """One image (BGR uint8) and its objects as dicts with ``bbox`` (xywh)
    and ``label``."""
    base = rng.integers(40, 100)
    img = np.clip(rng.normal(base, 8, (img_size, img_size, 3)), 0,
                  255).astype(np.uint8)
    objects: List[Dict] = []
    if rng.random() < empty_prob:
        return img, objects
    boxes: List[Sequence[int]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            w, h = (rng.uniform(min_size, max_size, 2) * img_size).astype(int)
            x1 = int(rng.integers(0, img_size - w + 1))
            y1 = int(rng.integers(0, img_size - h + 1))
            box = (x1, y1, x1 + int(w), y1 + int(h))
            if not _overlaps(box, boxes, max_iou=0.1):
                break
        else:
            continue
        boxes.append(box)
        label = int(rng.integers(len(CLASSES)))
        _draw(img, label, box, rng)
        objects.append(dict(bbox=[box[0], box[1], w, h], label=label))
    return img, objects


def make_synthetic_coco(out_dir: str,
                        num_train: int = 400,
                        num_val: int = 100,
                        img_size: int = 128,
                        max_objects: int = 3,
                        min_size: float = 0.2,
                        max_size: float = 0.5,
                        empty_prob: float = 0.05,
                        seed: int = 0) -> Dict[str, str]:
    """Write ``{train,val}/*.png`` and ``annotations/instances_*.json``.

    Returns:
        dict: split name -> annotation file path.
    """
    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    categories = [
        dict(id=i + 1, name=name, supercategory='shape')
        for i, name in enumerate(CLASSES)
    ]
    ann_files = {}
    for split, num in (('train', num_train), ('val', num_val)):
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for img_id in range(1, num + 1):
            img, objects = make_image(rng, img_size, max_objects, min_size,
                                      max_size, empty_prob)
            file_name = f'{img_id:06d}.png'
            cv2.imwrite(str(root / split / file_name), img)
            images.append(
                dict(
                    id=img_id,
                    file_name=file_name,
                    width=img_size,
                    height=img_size))
            for obj in objects:
                w, h = obj['bbox'][2:]
                annotations.append(
                    dict(
                        id=len(annotations) + 1,
                        image_id=img_id,
                        category_id=obj['label'] + 1,
                        bbox=[float(v) for v in obj['bbox']],
                        area=float(w * h),
                        iscrowd=0))
        ann_file = osp.join(
            str(root), 'annotations', f'instances_{split}.json')
        with open(ann_file, 'w', encoding='utf-8') as f:
            json.dump(
                dict(
                    images=images,
                    annotations=annotations,
                    categories=categories), f)
        ann_files[split] = ann_file
    return ann_files
