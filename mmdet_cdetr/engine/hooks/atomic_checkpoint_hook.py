"""Checkpoints that a kill at any moment cannot lose.

MMEngine's ``CheckpointHook`` first deletes the oldest checkpoint
(``max_keep_ckpts``), then writes the new one in place, then points
``last_checkpoint`` at it: a kill during the write leaves a truncated file
and, with ``max_keep_ckpts=1``, nothing to resume from. Here the order is
write a temporary file in the same directory, flush it to disk, rename it
over its final name (atomic within a file system), replace
``last_checkpoint`` the same way, and only then delete old checkpoints. At
every moment ``last_checkpoint`` names a complete file.
"""
import errno
import glob
import os
import os.path as osp
import signal
import threading
from typing import List

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from mmdet_cdetr.registry import HOOKS
from mmdet_cdetr.utils.errors import CheckpointError

TMP_SUFFIX = '.tmp'
# A full disk, or a full quota on a cluster's file system.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp_path: str, path: str) -> None:
    """Flush ``tmp_path`` to disk and rename it to ``path``."""
    with open(tmp_path, 'rb') as f:
        os.fsync(f.fileno())
    os.replace(tmp_path, path)
    _fsync_dir(osp.dirname(osp.abspath(path)))


def temporary_name(path: str) -> str:
    """A hidden name beside ``path``, unique to this process."""
    folder, name = osp.split(path)
    return osp.join(folder, f'.{name}.{os.getpid()}{TMP_SUFFIX}')


def write_text_atomically(path: str, text: str) -> None:
    tmp_path = temporary_name(path)
    try:
        with open(tmp_path, 'w') as f:
            f.write(text)
        publish(tmp_path, path)
    finally:
        if osp.exists(tmp_path):
            os.remove(tmp_path)


def _last_complete(work_dir: str) -> str:
    """The checkpoint ``last_checkpoint`` names (always a complete one)."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return 'none (none was saved yet)'
    with open(pointer) as f:
        return f.read().strip()


def _exit_on_signal(signum: int, frame) -> None:
    """SIGTERM as an exception, so that ``finally`` blocks (the temporary
    checkpoint's removal among them) run before the process ends."""
    raise SystemExit(128 + signum)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`mmengine.hooks.CheckpointHook` (same arguments) writing
    atomically and removing old checkpoints last.

    On local storage only (``out_dir`` on another backend: MMEngine's
    behaviour). Also, while training: SIGTERM (pre-emption, ``scancel``)
    ends the run like Ctrl-C does, with exit status 143 and no partial file;
    temporary files of a killed run are removed when the next one starts
    (the work-dir lock of ``tools/train.py`` makes sure none is writing).
    The ``best_*.pth`` files of ``save_best`` are still written by MMEngine.
    A full disk ends the run with one error naming the directory and the
    last complete checkpoint, which is left in place.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self._local = isinstance(self.file_backend, LocalBackend)
        if self._local and is_main_process():
            pattern = osp.join(glob.escape(self.out_dir), f'.*{TMP_SUFFIX}')
            for stale in glob.glob(pattern):
                os.remove(stale)
        self._previous_handler = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
            self._previous_handler = signal.signal(signal.SIGTERM,
                                                   _exit_on_signal)

    def after_train(self, runner) -> None:
        super().after_train(runner)
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not self._local:
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        try:
            self._save_atomically(runner, step, meta)
        except OSError as err:
            if err.errno not in DISK_FULL:
                raise
            raise CheckpointError(
                f'{err.strerror} while saving a checkpoint in '
                f'{self.out_dir}; the last complete checkpoint is '
                f'{_last_complete(runner.work_dir)}: free some space and '
                'resume with --resume') from err

    def _save_atomically(self, runner, step, meta) -> None:
        expired = self._keep(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        tmp_path = temporary_name(self.last_ckpt)
        try:
            runner.save_checkpoint(
                self.out_dir,
                osp.basename(tmp_path),
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
            if is_main_process():
                publish(tmp_path, self.last_ckpt)
        finally:
            if is_main_process() and osp.exists(tmp_path):
                os.remove(tmp_path)
        if not is_main_process():
            return
        write_text_atomically(
            osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old in expired:
            path = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if osp.isfile(path):
                os.remove(path)

    def _keep(self, runner, step: int) -> List[int]:
        """Record ``step`` among the checkpoints to keep (in the message
        hub, so that a resumed run knows them); return the steps that drop
        out, to delete once the new checkpoint is in place."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids
                                        and self.keep_ckpt_ids[-1] == step):
            return []
        expired = []
        while len(self.keep_ckpt_ids) >= self.max_keep_ckpts:
            expired.append(self.keep_ckpt_ids.popleft())
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))
        return expired
