import logging
import os.path as osp
from typing import Any, List

import cv2
import numpy as np
from mmdet.datasets import CocoDataset as MMDetCocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmengine.logging import print_log

from mmdet_cdetr.registry import DATASETS
from .annotation_checks import (AnnotationError, AnnotationReport,
                                check_class_names, check_structure)


@DATASETS.register_module()
class CocoDataset(MMDetCocoDataset):
    """mmdet's ``CocoDataset``, checked before training and with errors that
    name the file at fault.

    It shadows mmdet's in the ``mmdet_cdetr`` scope so that every config of
    ours, including those inherited from mmdet's bases, gets it; mmdet's own
    stays reachable as ``mmdet.CocoDataset``. On top of mmdet's:

    - the annotation file must have ``images``, ``annotations`` and
      ``categories``, and every name of ``metainfo.classes`` must be one of
      its categories (mmdet would train with fewer labels than classes);
    - boxes are clipped to their image; boxes that cannot be used are
      dropped and counted, reported once per split; non-finite coordinates
      are an error naming the image file and annotation id;
    - a split with no usable image is an error saying why;
    - a missing or undecodable image is an error naming it and the
      annotation file, from whichever data-loader worker meets it.
    """

    def load_data_list(self) -> List[dict]:
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(
                f'COCO annotation file not found: {self.ann_file}')
        try:
            data_list = super().load_data_list()
        except AnnotationError:
            raise
        except (KeyError, TypeError, AssertionError, ValueError) as err:
            raise ValueError(
                f'Cannot read COCO annotation file {self.ann_file}: '
                f'{type(err).__name__}: {err}') from err
        summary = self._report.summary()
        if summary:
            print_log(summary, logger='current', level=logging.WARNING)
        return data_list

    def COCOAPI(self, local_path: str) -> COCO:  # noqa: N802 (mmdet's name)
        """Read the annotation file (mmdet calls ``self.COCOAPI(path)``) and
        check it before mmdet indexes it."""
        coco = COCO(local_path)
        check_structure(coco.dataset, self.ann_file)
        check_class_names(self.metainfo['classes'], coco.dataset['categories'],
                          self.ann_file)
        self._report = AnnotationReport(self.ann_file, coco.getCatIds())
        return coco

    def parse_data_info(self, raw_data_info: dict) -> dict:
        img_info = raw_data_info['raw_img_info']
        anns = self._report.clean(raw_data_info['raw_ann_info'], img_info)
        return super().parse_data_info(dict(raw_data_info, raw_ann_info=anns))

    def filter_data(self) -> List[dict]:
        data_list = super().filter_data()
        if data_list:
            return data_list
        if not self.data_list:
            raise ValueError(f'COCO annotation file {self.ann_file} lists '
                             'no images')
        raise ValueError(
            f'no usable training image in {self.ann_file}: none of its '
            f'{len(self.data_list)} images has a usable annotation of the '
            f'classes {", ".join(map(repr, self.metainfo["classes"]))}')

    def prepare_data(self, idx: int) -> Any:
        try:
            return super().prepare_data(idx)
        except Exception as err:
            img_path = self.get_data_info(idx).get('img_path')
            if img_path is None:
                raise
            if not osp.isfile(img_path):
                raise FileNotFoundError(
                    f'Image not found: {img_path} (listed in '
                    f'{self.ann_file})') from err
            if not _decodable(img_path):
                raise ValueError(f'cannot decode image {img_path} (listed in '
                                 f'{self.ann_file})') from err
            raise


def _decodable(path: str) -> bool:
    """Whether OpenCV can read ``path`` as an image (only asked after the
    pipeline failed, so it costs nothing on good data)."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        return False
    try:
        return cv2.imdecode(data, cv2.IMREAD_UNCHANGED) is not None
    except cv2.error:
        return False
