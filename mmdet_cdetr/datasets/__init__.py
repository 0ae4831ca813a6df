from .coco import CocoDataset
from .synthetic_coco import CLASSES as SYNTHETIC_CLASSES
from .synthetic_coco import make_synthetic_coco
from .transforms import ImageSizeError, LoadImageFromFile

__all__ = [
    'CocoDataset', 'ImageSizeError', 'LoadImageFromFile', 'SYNTHETIC_CLASSES',
    'make_synthetic_coco'
]
