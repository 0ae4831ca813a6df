from typing import Dict

from mmdet.evaluation import CocoMetric as MMDetCocoMetric

from mmdet_cdetr.datasets.coco import cat_ids_in_class_order
from mmdet_cdetr.registry import METRICS


@METRICS.register_module(name=['ClassOrderCocoMetric', 'CocoMetric'])
class ClassOrderCocoMetric(MMDetCocoMetric):
    """mmdet's ``CocoMetric`` (same arguments) reading label ``i`` as
    ``dataset_meta['classes'][i]``, as our ``CocoDataset`` numbers them.

    mmdet's maps label ``i`` to the ``i``-th category of the annotation
    file that is among the classes, in the file's order: with a class list
    in another order, per-class AP and every result would carry another
    class's category. Shadows mmdet's metric in the ``mmdet_cdetr`` scope.
    """

    def compute_metrics(self, results: list) -> Dict[str, float]:
        if self.cat_ids is None and self._coco_api is not None:
            self.cat_ids = cat_ids_in_class_order(self._coco_api,
                                                  self.dataset_meta['classes'])
        return super().compute_metrics(results)
