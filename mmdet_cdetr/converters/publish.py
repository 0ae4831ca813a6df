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

from mmdet_cdetr.utils.checkpoint_file import check_output_path
from mmdet_cdetr.utils.errors import ArgumentError
from .common import load_checkpoint_file

DEFAULT_KEYS = ('meta', 'state_dict')


def publish_checkpoint(in_file: str,
                       out_file: str,
                       save_keys: Sequence[str] = DEFAULT_KEYS,
                       force: bool = False) -> str:
    """Write ``in_file``'s ``save_keys`` (no optimizer, message hub or
    scheduler state) to ``out_file`` with the first 8 hex digits of its
    sha256 added to the name: ``epoch_50.pth`` -> ``epoch_50-1a2b3c4d.pth``.

    ``out_file`` itself is never written (the file is saved under a
    temporary name, then renamed to the hashed one), and it may not be
    ``in_file`` or, without ``force``, an existing file.

    Returns:
        str: The path written.
    """
    check_output_path(out_file, [in_file], force)
    checkpoint = load_checkpoint_file(in_file)
    missing = [key for key in save_keys if key not in checkpoint]
    if missing:
        raise ArgumentError(
            f'{in_file} has no {missing} (it has '
            f'{sorted(checkpoint)}); choose --save-keys among them')
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f'.{out.name}.tmp')
    torch.save({key: checkpoint[key] for key in save_keys}, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    final = out.with_name(f'{out.stem}-{digest}{out.suffix or ".pth"}')
    tmp.replace(final)  # an existing file of that name has the same hash
    return str(final)
