"""Conditional DETR (Meng et al., ICCV 2021) as an MMDetection extension.

Importing the package registers its components in the ``mmdet_cdetr``
scope, lets ``torch.load`` read MMEngine checkpoints with
``weights_only=True``, makes ``mmdet_cdetr::`` config paths resolve to
the installed configs and has MMEngine convert official and HuggingFace
checkpoints as it loads them (:mod:`.converters.in_memory`).
"""
from . import datasets, engine, evaluation, models  # noqa: F401
from .converters.in_memory import register_checkpoint_loaders
from .utils import allow_mmengine_checkpoints, register_openmmlab_package
from .version import __version__

allow_mmengine_checkpoints()
register_openmmlab_package()
register_checkpoint_loaders()

__all__ = ['__version__']
