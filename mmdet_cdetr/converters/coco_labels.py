"""Map 91-logit COCO classifiers onto mmdet's 80 contiguous labels.

The official repository (like DETR) has one logit per COCO category id
(0..90, with gaps); HuggingFace names each logit in ``id2label``. mmdet's
label ``i`` is the ``i``-th class of ``CocoDataset.METAINFO['classes']``,
which lists the categories in the order of their ids.
"""
from typing import Dict, List, Mapping

from mmdet.datasets import CocoDataset
from torch import Tensor

from mmdet_cdetr.utils.errors import CheckpointError

COCO_CLASSES = tuple(CocoDataset.METAINFO['classes'])
# COCO 2017 category id of each mmdet label.
COCO_CATEGORY_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18,
                     19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35,
                     36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50,
                     51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64,
                     65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82,
                     84, 85, 86, 87, 88, 89, 90)
CLASSIFIER_KEYS = ('bbox_head.fc_cls.weight', 'bbox_head.fc_cls.bias')


def rows_from_id2label(id2label: Mapping) -> List[int]:
    """Classifier row of each mmdet COCO label, found by class name."""
    rows_by_name: Dict[str, int] = {}
    for row, name in id2label.items():
        rows_by_name.setdefault(str(name).strip().lower(), int(row))
    missing = [name for name in COCO_CLASSES if name not in rows_by_name]
    if missing:
        raise CheckpointError(
            f'id2label has no class named {", ".join(missing)}: the '
            'checkpoint was not trained on the COCO classes')
    return [rows_by_name[name] for name in COCO_CLASSES]


def select_classifier_rows(state_dict: Dict[str, Tensor],
                           rows: List[int]) -> str:
    """Keep the classifier rows of mmdet's labels, in label order.

    Returns:
        str: A note for the report.
    """
    weight = state_dict.get(CLASSIFIER_KEYS[0])
    if weight is None:
        return 'no classifier in the source'
    if max(rows) >= len(weight):
        raise CheckpointError(
            f'the classifier has {len(weight)} logits, fewer '
            f'than the COCO mapping needs ({max(rows) + 1})')
    for key in CLASSIFIER_KEYS:
        if key in state_dict:
            state_dict[key] = state_dict[key][rows]
    return (f'classifier: {len(weight)} logits -> {len(rows)} COCO labels '
            f'(rows {rows[0]}, {rows[1]}, ..., {rows[-1]})')
