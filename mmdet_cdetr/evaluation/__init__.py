from .coco_metric import ClassOrderCocoMetric

__all__ = ['ClassOrderCocoMetric']
