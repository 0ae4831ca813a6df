import logging
from collections import Counter
from typing import Any, List, Sequence

import cv2
import numpy as np
from mmdet.datasets import CocoDataset as MMDetCocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmengine import fileio
from mmengine.logging import print_log

from mmdet_cdetr.registry import DATASETS
from mmdet_cdetr.utils.errors import InputNotFoundError
from .annotation_checks import (AnnotationError, AnnotationReport,
                                check_class_names, check_consistency,
                                check_structure)

_EXAMPLES = 3


def cat_ids_in_class_order(coco: COCO, classes: Sequence[str]) -> List[int]:
    """The category id of each of ``classes``, in their order, so that
    label ``i`` is ``classes[i]``. pycocotools returns the ids in the
    file's order, and mmdet numbers the labels in that order: a class list
    written in another order would train and evaluate every box under
    another class's name. Category names are unique
    (:func:`check_consistency`)."""
    by_name = {cat['name']: cat_id for cat_id, cat in coco.cats.items()}
    return [by_name[name] for name in classes if name in by_name]


class _ClassOrderCOCO(COCO):
    """mmdet's COCO API with :func:`cat_ids_in_class_order` for names."""

    def get_cat_ids(self, cat_names=[], sup_names=[], cat_ids=[]):
        if cat_names and not (sup_names or cat_ids):
            return cat_ids_in_class_order(self, cat_names)
        return super().get_cat_ids(cat_names, sup_names, cat_ids)


@DATASETS.register_module(name=['CheckedCocoDataset', 'CocoDataset'])
class CheckedCocoDataset(MMDetCocoDataset):
    """mmdet's ``CocoDataset``, checked before training and with errors that
    name the file at fault.

    It shadows mmdet's in the ``mmdet_cdetr`` scope so that every config of
    ours, including those inherited from mmdet's bases, gets it; mmdet's own
    stays reachable as ``mmdet.CocoDataset``. On top of mmdet's:

    - label ``i`` is ``metainfo.classes[i]``, whatever the order of the
      file's categories;
    - the annotation file must have ``images``, ``annotations`` and
      ``categories``, consistent with each other (unique ids and category
      names, positive image sizes, annotations of listed images and
      categories), and every name of ``metainfo.classes`` must be one of
      its categories (mmdet would train with fewer labels than classes);
    - boxes are clipped to their image; boxes that cannot be used are
      dropped and counted, reported once per split; non-finite coordinates
      are an error naming the image file and annotation id;
    - images dropped by ``filter_cfg`` are counted and reported once per
      split; a split left without images, or without a positive
      (non-crowd) box, is an error saying why;
    - a missing or undecodable image is an error naming it and the
      annotation file, from whichever data-loader worker meets it.

    Files are read through ``mmengine.fileio`` with ``backend_args``.
    """

    def load_data_list(self) -> List[dict]:
        if not fileio.exists(self.ann_file, backend_args=self.backend_args):
            raise InputNotFoundError(
                f'COCO annotation file not found: {self.ann_file}')
        try:
            data_list = super().load_data_list()
        except AnnotationError:
            raise
        except (KeyError, TypeError, AssertionError, ValueError) as err:
            raise AnnotationError(
                f'Cannot read COCO annotation file {self.ann_file}: '
                f'{type(err).__name__}: {err}') from err
        summary = self._report.summary()
        if summary:
            print_log(summary, logger='current', level=logging.WARNING)
        return data_list

    def COCOAPI(self, local_path: str) -> COCO:  # noqa: N802 (mmdet's name)
        """Read the annotation file (mmdet calls ``self.COCOAPI(path)``) and
        check it before mmdet indexes it."""
        coco = _ClassOrderCOCO(local_path)
        check_structure(coco.dataset, self.ann_file)
        check_consistency(coco.dataset, self.ann_file)
        check_class_names(self.metainfo['classes'], coco.dataset['categories'],
                          self.ann_file)
        self._report = AnnotationReport(self.ann_file)
        return coco

    def parse_data_info(self, raw_data_info: dict) -> dict:
        img_info = raw_data_info['raw_img_info']
        anns = self._report.clean(raw_data_info['raw_ann_info'], img_info)
        return super().parse_data_info(dict(raw_data_info, raw_ann_info=anns))

    def filter_data(self) -> List[dict]:
        if not self.data_list:
            raise AnnotationError(f'COCO annotation file {self.ann_file} '
                                  'lists no images')
        data_list = super().filter_data()
        dropped = _dropped_by_filter(self.data_list, data_list, self.filter_cfg
                                     or {})
        if data_list and dropped:
            print_log(
                f'{self.ann_file}: filter_cfg dropped {dropped}',
                logger='current',
                level=logging.WARNING)
        boxes = Counter(instance['ignore_flag'] for info in self.data_list
                        for instance in info['instances'])
        if not boxes[0]:
            raise AnnotationError(self._no_positive_box(boxes[1]))
        if not data_list:
            raise AnnotationError(
                f'filter_cfg {dict(self.filter_cfg)} removed all '
                f'{len(self.data_list)} images of {self.ann_file}: '
                f'{dropped}; relax the dataset\'s filter_cfg')
        return data_list

    def _no_positive_box(self, crowd: int) -> str:
        """Why a split without a positive box cannot be used."""
        classes = ', '.join(map(repr, self.metainfo['classes']))
        why = (f'all {crowd} boxes of the classes are iscrowd=1, which '
               'training ignores' if crowd else
               f'none of its {len(self.data_list)} images has a usable '
               f'annotation of the classes {classes}')
        if self.test_mode:
            return (f'no ground truth to evaluate in {self.ann_file}: {why} '
                    '(box AP would be -1)')
        return f'no usable training image in {self.ann_file}: {why}'

    def prepare_data(self, idx: int) -> Any:
        try:
            return super().prepare_data(idx)
        except AnnotationError as err:
            raise type(err)(f'{err} (listed in {self.ann_file})') from err
        except Exception as err:
            img_path = self.get_data_info(idx).get('img_path')
            if img_path is None:
                raise
            if not fileio.exists(img_path, backend_args=self.backend_args):
                raise InputNotFoundError(
                    f'Image not found: {img_path} (listed in '
                    f'{self.ann_file})') from err
            if not _decodable(img_path, self.backend_args):
                raise AnnotationError(f'cannot decode image {img_path} '
                                      f'(listed in {self.ann_file})') from err
            raise


def _dropped_by_filter(before: List[dict], after: List[dict],
                       filter_cfg: dict) -> str:
    """What ``filter_cfg`` removed, by reason with examples, or ''."""
    kept = {id(info) for info in after}
    reasons = {}
    min_size = filter_cfg.get('min_size', 0)
    for info in before:
        if id(info) in kept:
            continue
        small = min(info['width'], info['height']) < min_size
        reason = (f'smaller than min_size={min_size}'
                  if small else 'without annotations of the classes '
                  '(filter_empty_gt=True)')
        reasons.setdefault(reason, []).append(info['img_path'])
    return ', '.join(f'{len(paths)} images {reason} (e.g. '
                     f'{", ".join(paths[:_EXAMPLES])})'
                     for reason, paths in reasons.items())


def _decodable(path: str, backend_args: dict) -> bool:
    """Whether OpenCV can read ``path`` as an image (only asked after the
    pipeline failed, so it costs nothing on good data)."""
    data = np.frombuffer(
        fileio.get(path, backend_args=backend_args), dtype=np.uint8)
    if data.size == 0:
        return False
    try:
        return cv2.imdecode(data, cv2.IMREAD_UNCHANGED) is not None
    except cv2.error:
        return False
