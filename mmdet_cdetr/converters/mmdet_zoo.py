"""Checkpoints of MMDetection 3.3's built-in Conditional DETR.

Our parameter names are mmdet's, so such a checkpoint loads into our model
as it is (``tools/test.py CONFIG mmdet_checkpoint.pth`` works). Passing it
through the converter checks that every key fits the model before a long
evaluation starts, and drops what testing does not need (optimizer state,
message hub).
"""
from typing import Dict, Tuple

from torch import Tensor

from mmdet_cdetr.utils.errors import CheckpointError
from .checkpoint_format import MMDET, OURS, require_format
from .common import Conversion, load_checkpoint_file


def load_mmdet(path: str) -> Tuple[Dict[str, Tensor], dict]:
    """State dict and meta of an MMEngine checkpoint."""
    checkpoint = load_checkpoint_file(path)
    require_format(path, checkpoint, (MMDET, OURS))
    if 'state_dict' not in checkpoint:
        raise CheckpointError(f'{path} has no "state_dict" entry (keys: '
                              f'{", ".join(map(str, checkpoint))}): not an '
                              'MMEngine checkpoint')
    return checkpoint['state_dict'], checkpoint.get('meta') or {}


def convert_mmdet(state_dict: Dict[str, Tensor]) -> Conversion:
    """mmdet's names are ours: every tensor is kept under its name."""
    return Conversion(
        dict(state_dict),
        notes=['mmdet parameter names are ours: no key renamed'])
