"""Prepare a training checkpoint for release (mmdet's ``publish_model``).

mmdet's tool ``torch.load``s with the default ``weights_only=True`` of
torch >= 2.6 and fails on MMEngine's training state; this one loads through
our allow-list, keeps only what inference needs, and names the file after
its hash so that a download can be checked.
"""
import hashlib
from pathlib import Path
from typing import Sequence

import torch

from .common import load_checkpoint_file

DEFAULT_KEYS = ('meta', 'state_dict')


def publish_checkpoint(in_file: str,
                       out_file: str,
                       save_keys: Sequence[str] = DEFAULT_KEYS) -> str:
    """Write ``in_file``'s ``save_keys`` (no optimizer, message hub or
    scheduler state) to ``out_file`` with the first 8 hex digits of its
    sha256 added to the name: ``epoch_50.pth`` -> ``epoch_50-1a2b3c4d.pth``.

    Returns:
        str: The path written.
    """
    checkpoint = load_checkpoint_file(in_file)
    missing = [key for key in save_keys if key not in checkpoint]
    if missing:
        raise KeyError(f'{in_file} has no {missing} (it has '
                       f'{sorted(checkpoint)}); choose --save-keys among them')
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: checkpoint[key] for key in save_keys}, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()[:8]
    final = out.with_name(f'{out.stem}-{digest}{out.suffix or ".pth"}')
    out.replace(final)
    return str(final)
