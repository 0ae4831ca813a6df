import os.path as osp
from typing import Any, List

from mmdet.datasets import CocoDataset as MMDetCocoDataset

from mmdet_cdetr.registry import DATASETS


@DATASETS.register_module()
class CocoDataset(MMDetCocoDataset):
    """mmdet's ``CocoDataset`` whose errors name the file at fault.

    It shadows mmdet's in the ``mmdet_cdetr`` scope so that every config of
    ours, including those inherited from mmdet's bases, gets it; mmdet's own
    stays reachable as ``mmdet.CocoDataset``. pycocotools reports a broken
    annotation file as a bare JSON or key error, and a missing image surfaces
    from a data-loader worker; here both say which file, and which split.
    """

    def load_data_list(self) -> List[dict]:
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(
                f'COCO annotation file not found: {self.ann_file}')
        try:
            return super().load_data_list()
        except (ValueError, KeyError, TypeError, AssertionError) as err:
            raise ValueError(
                f'Cannot read COCO annotation file {self.ann_file}: '
                f'{type(err).__name__}: {err}') from err

    def prepare_data(self, idx: int) -> Any:
        try:
            return super().prepare_data(idx)
        except FileNotFoundError as err:
            img_path = self.get_data_info(idx).get('img_path')
            raise FileNotFoundError(
                f'Image not found: {img_path} (listed in {self.ann_file})'
            ) from err
