"""One training run per work dir.

Two runs writing into one work dir mix their logs and overwrite each other's
checkpoints. The first run holds an exclusive ``flock`` on a file in the
work dir; the kernel releases it when the process ends in any way (``kill
-9`` included), so a dead run never leaves the directory locked, and a
``--resume`` after it simply takes the lock again. Only the process of
global rank 0 locks: the other processes of a distributed run share its
work dir.

The lock's descriptor is closed in every child (``O_CLOEXEC`` for exec'd
ones, an at-fork handler for forked data-loader workers), so a worker that
outlives its trainer cannot keep the work dir locked. Where the file system
has no working ``flock`` (Lustre mounted without it, NFSv3 without lockd),
training warns once and runs without the lock.
"""
import errno
import fcntl
import logging
import os
import os.path as osp
import socket
from contextlib import contextmanager
from typing import Iterator, Set

from mmengine.logging import print_log

from mmdet_cdetr.utils.errors import UserError

LOCK_FILE = '.train.lock'
# Where each launcher of tools/train.py puts a process's global rank.
_RANK_VARIABLES = dict(
    pytorch='RANK', slurm='SLURM_PROCID', mpi='OMPI_COMM_WORLD_RANK')
# flock's errors on a file system that does not implement it.
NO_FLOCK = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)
# Descriptors of the locks this process holds, closed in forked children.
_held: Set[int] = set()
_warned_no_flock = False


class WorkDirError(UserError, RuntimeError):
    """The work dir cannot be written or is in use by another run."""


def ensure_writable(work_dir: str) -> None:
    """Create ``work_dir`` if needed; fail in one line if it cannot be."""
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as err:
        raise WorkDirError(
            f'cannot create work dir {work_dir}: {err.strerror}') from err
    if not os.access(work_dir, os.W_OK | os.X_OK):
        raise WorkDirError(f'work dir {work_dir} is not writable')


def _close_held_in_child() -> None:
    for fd in _held:
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def _warn_no_flock(path: str, err: OSError) -> None:
    global _warned_no_flock
    if not _warned_no_flock:
        _warned_no_flock = True
        print_log(
            f'cannot lock {path} ({err.strerror}: the file system has no '
            'working flock); training without the work-dir lock, so make '
            'sure no other run uses this work dir',
            logger='current',
            level=logging.WARNING)


def _rank(launcher: str) -> int:
    variable = _RANK_VARIABLES.get(launcher)
    return int(os.environ.get(variable, 0)) if variable else 0


@contextmanager
def lock_work_dir(work_dir: str, launcher: str = 'none') -> Iterator[None]:
    """Hold ``work_dir`` for this run, or raise :class:`WorkDirError`
    naming it (and the process holding it) at once."""
    if _rank(launcher) != 0:
        yield
        return
    ensure_writable(work_dir)
    path = osp.join(work_dir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise WorkDirError(f'cannot create {path}: {err.strerror}') from err
    _held.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors='replace').strip()
            raise WorkDirError(
                f'work dir {work_dir} is in use by another training run '
                f'({holder or "unknown process"}): wait for it to end or '
                'choose another --work-dir') from None
        except OSError as err:
            if err.errno not in NO_FLOCK:
                raise
            _warn_no_flock(path, err)
        holder = f'pid {os.getpid()} on {socket.gethostname()}\n'
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        _held.discard(fd)
        os.close(fd)
