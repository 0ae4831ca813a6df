"""``tools/train.py --resume [PATH]``: what it makes of the config (the
checkpoint the run then loads is
:func:`~mmdet_cdetr.utils.checkpoint_file.checkpoint_to_load`'s)."""
import logging
import os.path as osp
from typing import Optional

from mmengine.config import Config
from mmengine.logging import print_log


def apply_resume(cfg: Config, resume: Optional[str]) -> None:
    """Set ``cfg`` up for ``tools/train.py --resume [PATH]`` (``'auto'``
    without a path), saying in one line what becomes of the config's
    ``load_from``: MMEngine's runner would drop it silently, and with
    nothing to resume in the work dir train from scratch instead of from
    the weights the config starts from."""
    if resume is None:
        return
    load_from = cfg.get('load_from')
    if resume != 'auto':
        cfg.resume, cfg.load_from = True, resume
        if load_from and load_from != resume:
            _note(f'--resume {resume}: the config\'s load_from={load_from} '
                  'is not loaded (a resumed run continues from its own '
                  'checkpoint)')
        return
    has_checkpoint = osp.isfile(osp.join(cfg.work_dir, 'last_checkpoint'))
    if load_from and not has_checkpoint:
        cfg.resume = False
        _note(f'--resume: {cfg.work_dir} has no checkpoint to resume from; '
              f'starting a new run from load_from={load_from}')
        return
    cfg.resume, cfg.load_from = True, None
    if load_from:
        _note(f'--resume: continuing the run in {cfg.work_dir} from its '
              f'last checkpoint; the config\'s load_from={load_from} (where '
              'the run started) is not loaded again')


def _note(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)
