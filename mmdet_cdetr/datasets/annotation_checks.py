"""Checks of a COCO-format annotation file, before any training starts.

mmdet's ``CocoDataset`` drops bad boxes silently, keeps boxes that leave
the image unclipped, and lets a NaN through to the Hungarian matcher, where
scipy fails mid-run without naming the image. pycocotools indexes images,
annotations and categories by id, so a repeated id silently merges two
entries, and an annotation of an image or category the file does not list
is silently ignored. Here an inconsistent file is an error naming it and
the offending ids or names; every annotation is either kept, repaired
(clipped to the image) or dropped with a reason that is counted and
reported once per split; values that cannot be repaired (non-finite
coordinates) are an error naming the image and annotation.
"""
import math
from collections import Counter, defaultdict
from typing import Dict, List, Sequence

from mmdet_cdetr.utils.errors import UserError

REQUIRED_KEYS = ('images', 'annotations', 'categories')
_EXAMPLES_PER_REASON = 3


class AnnotationError(UserError, ValueError):
    """The annotation file is readable but unusable; the message names it."""


def check_structure(dataset: dict, ann_file: str) -> None:
    """The top-level lists a COCO detection file must have."""
    if not isinstance(dataset, dict):
        raise AnnotationError(f'COCO annotation file {ann_file} holds a '
                              f'{type(dataset).__name__}, not a JSON object')
    missing = [key for key in REQUIRED_KEYS if key not in dataset]
    if missing:
        raise AnnotationError(
            f'COCO annotation file {ann_file} has no '
            f'{", ".join(repr(key) for key in missing)} (a COCO detection '
            f'file needs {", ".join(REQUIRED_KEYS)}; it has '
            f'{", ".join(map(repr, dataset)) or "no keys"})')
    for key in REQUIRED_KEYS:
        if not isinstance(dataset[key], list):
            raise AnnotationError(
                f'COCO annotation file {ann_file}: {key!r} must '
                f'be a list, not {type(dataset[key]).__name__}')


def check_consistency(dataset: dict, ann_file: str) -> None:
    """Ids unique per list, sizes positive, every annotation of a listed
    image and category, category names unique."""
    for key, what in (('images', 'image'), ('annotations', 'annotation'),
                      ('categories', 'category')):
        _unique(ann_file, what + ' ids',
                [entry.get('id') for entry in dataset[key]])
    _unique(ann_file, 'category names',
            [cat.get('name') for cat in dataset['categories']])
    bad_sizes = [
        img.get('id') for img in dataset['images'] if not all(
            isinstance(img.get(k), (int, float)) and img.get(k) > 0
            for k in ('width', 'height'))
    ]
    _refuse(ann_file, bad_sizes, 'images without a positive width and '
            'height: image ids')
    image_ids = {img.get('id') for img in dataset['images']}
    category_ids = {cat.get('id') for cat in dataset['categories']}
    anns = dataset['annotations']
    _refuse(ann_file, [
        f'{a.get("id")} (image_id {a.get("image_id")})'
        for a in anns if a.get('image_id') not in image_ids
    ], 'annotations of an image id not in "images": annotation ids')
    _refuse(
        ann_file, [
            f'{a.get("id")} (category_id {a.get("category_id")})'
            for a in anns if a.get('category_id') not in category_ids
        ], 'annotations of a category id not in "categories": annotation ids')


def _unique(ann_file: str, what: str, values: list) -> None:
    repeated = [value for value, n in Counter(values).items() if n > 1]
    _refuse(ann_file, repeated, f'repeated {what}')


def _refuse(ann_file: str, offenders: list, what: str) -> None:
    if offenders:
        shown = ', '.join(map(str, offenders[:_EXAMPLES_PER_REASON]))
        more = (f' and {len(offenders) - _EXAMPLES_PER_REASON} more'
                if len(offenders) > _EXAMPLES_PER_REASON else '')
        raise AnnotationError(
            f'COCO annotation file {ann_file}: {len(offenders)} {what} '
            f'{shown}{more}')


def check_class_names(classes: Sequence[str], categories: List[dict],
                      ann_file: str) -> None:
    """Every class of ``metainfo.classes`` must name a category of the
    file; mmdet would otherwise train with fewer labels than classes."""
    names = [cat.get('name') for cat in categories]
    absent = [name for name in classes if name not in names]
    if absent:
        raise AnnotationError(
            f'metainfo.classes {", ".join(map(repr, absent))} not found '
            f'among the categories of {ann_file}, which are: '
            f'{", ".join(map(repr, names)) or "none"}')


class AnnotationReport:
    """Cleans the annotations of one split and remembers what it changed.

    Args:
        ann_file: The annotation file, named in messages.
    """

    def __init__(self, ann_file: str):
        self.ann_file = ann_file
        self.counts: Counter = Counter()
        self.examples: Dict[str, List[str]] = defaultdict(list)

    def clean(self, anns: List[dict], img_info: dict) -> List[dict]:
        """The annotations of one image that can be trained on: boxes
        clipped to the image, unusable ones dropped (and counted).

        Raises:
            ValueError: A box with a non-finite or missing coordinate.
        """
        width, height = img_info['width'], img_info['height']
        kept = []
        for ann in anns:
            bbox = ann.get('bbox')
            if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                    or not all(_is_finite(v) for v in bbox)):
                raise AnnotationError(
                    f'annotation id {ann.get("id")} of image '
                    f'{img_info.get("file_name")} has bbox {bbox}: need 4 '
                    f'finite numbers (x, y, w, h) (in {self.ann_file})')
            x, y, w, h = bbox
            if w <= 0 or h <= 0 or ann.get('area', w * h) <= 0:
                self._note('zero or negative size', ann, img_info)
                continue
            x1, y1 = max(x, 0), max(y, 0)
            x2, y2 = min(x + w, width), min(y + h, height)
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                self._note('outside the image', ann, img_info)
                continue
            if x2 - x1 < 1 or y2 - y1 < 1:  # mmdet's limit
                self._note('under one pixel inside the image', ann, img_info)
                continue
            if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                self._note('clipped to the image', ann, img_info)
                ann = dict(ann, bbox=[x1, y1, x2 - x1, y2 - y1])
            kept.append(dict(ann, area=ann.get('area', w * h)))
        return kept

    def summary(self) -> str:
        """One line on what was dropped or clipped, '' if nothing."""
        if not self.counts:
            return ''
        parts = [
            f'{count} {reason} (e.g. {"; ".join(self.examples[reason])})'
            for reason, count in sorted(self.counts.items())
        ]
        return (f'{self.ann_file}: annotations dropped or repaired: ' +
                ', '.join(parts))

    def _note(self, reason: str, ann: dict, img_info: dict) -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < _EXAMPLES_PER_REASON:
            self.examples[reason].append(f'annotation id {ann.get("id")} in '
                                         f'{img_info.get("file_name")}')


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
