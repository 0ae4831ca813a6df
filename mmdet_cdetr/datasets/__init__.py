from .coco import CheckedCocoDataset
from .synthetic_coco import CLASSES as SYNTHETIC_CLASSES
from .synthetic_coco import make_synthetic_coco
from .transforms import CheckedLoadImageFromFile, ImageSizeError

__all__ = [
    'CheckedCocoDataset', 'ImageSizeError', 'CheckedLoadImageFromFile',
    'SYNTHETIC_CLASSES', 'make_synthetic_coco'
]
