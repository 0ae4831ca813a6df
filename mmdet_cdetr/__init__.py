"""Conditional DETR (Meng et al., ICCV 2021) as an MMDetection extension.

Importing the package registers its components in the ``mmdet_cdetr``
scope and lets ``torch.load`` read MMEngine checkpoints with
``weights_only=True``.
"""
from . import datasets, engine, evaluation, models  # noqa: F401
from .utils import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

__all__ = ['__version__']
