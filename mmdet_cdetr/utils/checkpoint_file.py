"""Which checkpoint a run will load, and whether that file is complete.

``torch.load`` on a damaged file fails deep inside with messages that do not
say what is wrong with it ("failed finding central directory" when
truncated, ``EOFError`` when empty, random bytes reported as a pickled object
off the allow-list). A PyTorch checkpoint is a zip archive whose directory is
at its end, so one look at the file tells complete from truncated before
anything is loaded.
"""
import os.path as osp
import zipfile
from typing import List, Optional, Sequence

import torch
from mmengine.config import Config
from torch import nn

from .errors import ArgumentError, CheckpointError, InputNotFoundError

# What torch.save writes first in its pre-1.6 (non-zip) format: protocol 2,
# then the pickled magic number 0x1950a86a20f9469cfc6c.
LEGACY_MAGIC = b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19'


class InvalidCheckpointError(CheckpointError):
    """The file is not a complete PyTorch checkpoint."""


def check_checkpoint_file(path: str) -> None:
    """Raise unless ``path`` is a complete PyTorch checkpoint file."""
    if not osp.isfile(path):
        raise InputNotFoundError(f'checkpoint not found: {path}')
    size = osp.getsize(path)
    if size == 0:
        raise InvalidCheckpointError(
            f'checkpoint {path} is empty (0 bytes): not a complete '
            'checkpoint')
    if zipfile.is_zipfile(path):
        return
    with open(path, 'rb') as f:
        head = f.read(len(LEGACY_MAGIC))
    if head == LEGACY_MAGIC:
        return
    if head.startswith(b'PK'):
        raise InvalidCheckpointError(
            f'checkpoint {path} is truncated ({size} bytes, the end of its '
            'zip archive is missing): not a complete checkpoint')
    raise InvalidCheckpointError(
        f'{path} is not a valid PyTorch checkpoint (neither a zip archive '
        'nor the legacy format)')


def checkpoint_to_load(cfg: Config) -> Optional[str]:
    """The checkpoint MMEngine's runner will load for ``cfg`` (``resume``,
    ``load_from``), or None. With ``resume`` and no ``load_from`` that is
    the file named in ``<work_dir>/last_checkpoint``, if there is one."""
    if cfg.get('resume') and cfg.get('load_from') is None:
        pointer = osp.join(cfg.work_dir, 'last_checkpoint')
        if not osp.isfile(pointer):
            return None
        with open(pointer) as f:
            path = f.read().strip()
        if not path:
            raise InvalidCheckpointError(
                f'{pointer} is empty: it should name the checkpoint to '
                'resume from (write its path there, or pass --resume PATH)')
        return path
    return cfg.get('load_from')


def check_output_path(out: str,
                      inputs: Sequence[str] = (),
                      force: bool = False) -> None:
    """Refuse to write ``out`` over one of the tool's ``inputs`` (ever) or
    over any existing file (unless ``force``): a checkpoint overwritten by
    its own conversion has lost its training state for good."""
    if not osp.exists(out):
        return
    for source in inputs:
        if source and osp.exists(source) and osp.samefile(source, out):
            raise ArgumentError(f'output {out} is the input {source}: '
                                'choose another output file')
    if osp.isdir(out):
        raise ArgumentError(f'output {out} is a directory: give a file name')
    if not force:
        raise ArgumentError(f'output {out} exists: pass --force to '
                            'overwrite it, or choose another name')


# The classifier, whose shape alone differing is a class-count mismatch:
# the head reports it (or re-initialises it when fine-tuning).
CLASSIFIER_KEYS = ('fc_cls.weight', 'fc_cls.bias')
_SHOWN = 3


def check_checkpoint_fits(model: nn.Module, path: str) -> None:
    """Raise :class:`CheckpointError` naming ``path`` and its first
    differences unless the checkpoint's state dict has exactly the model's
    keys and shapes (as MMEngine loads it: under ``state_dict``, without a
    ``module.`` prefix). A classifier of another class count is left to
    the head, whose message says so. Unpickling is refused as
    ``torch.load`` with ``weights_only=True`` refuses it, naming the file.
    ``path`` may be an http(s) URL (checked in the download cache), and is
    compared as MMEngine will load it: converted in memory from the
    official or HuggingFace layout (:mod:`mmdet_cdetr.converters.in_memory`),
    or refused naming its converter.
    """
    from mmdet_cdetr.converters.checkpoint_format import checkpoint_format
    from mmdet_cdetr.converters.in_memory import load_as_ours
    checkpoint = load_as_ours(path)
    found = checkpoint_format(checkpoint)
    converted = (checkpoint.get('meta') or {}).get('converted_from') or {}
    state = checkpoint.get('state_dict', checkpoint)
    theirs = {
        key[len('module.'):] if key.startswith('module.') else key: value
        for key, value in state.items() if isinstance(value, torch.Tensor)
    }
    ours = model.state_dict()
    differences: List[str] = [
        f'{key} {tuple(theirs[key].shape)} in the checkpoint, '
        f'{tuple(value.shape)} in the model' for key, value in ours.items()
        if key in theirs and theirs[key].shape != value.shape
        and not key.endswith(CLASSIFIER_KEYS)
    ]
    differences += _listed('missing', [k for k in ours if k not in theirs])
    differences += _listed('unexpected', [k for k in theirs if k not in ours])
    if differences:
        shown = '; '.join(differences[:_SHOWN])
        more = (f' (and {len(differences) - _SHOWN} more)'
                if len(differences) > _SHOWN else '')
        what = ('made for another architecture or config?'
                if found.loads_directly or found.name == 'unknown' else
                f'{found.description}')
        if converted.get('path') == path:
            what = (f'converted in memory from {converted["kind"]} layout; '
                    f'{what}')
        raise CheckpointError(
            f'checkpoint {path} does not fit the model of this config '
            f'({what}): {shown}{more}; convert checkpoints of other '
            'implementations with tools/model_converters/')


def _listed(kind: str, keys: List[str]) -> List[str]:
    """One difference per key kind: how many, and the first few."""
    if not keys:
        return []
    shown = ', '.join(keys[:_SHOWN])
    more = ', ...' if len(keys) > _SHOWN else ''
    return [f'{len(keys)} {kind} keys ({shown}{more})']
