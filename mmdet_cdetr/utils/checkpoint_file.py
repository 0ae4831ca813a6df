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
from typing import Optional

from mmengine.config import Config

# What torch.save writes first in its pre-1.6 (non-zip) format: protocol 2,
# then the pickled magic number 0x1950a86a20f9469cfc6c.
LEGACY_MAGIC = b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19'


class InvalidCheckpointError(ValueError):
    """The file is not a complete PyTorch checkpoint."""


def check_checkpoint_file(path: str) -> None:
    """Raise unless ``path`` is a complete PyTorch checkpoint file."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
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
