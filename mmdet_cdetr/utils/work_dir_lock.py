"""One training run per work dir.

Two runs writing into one work dir mix their logs and overwrite each other's
checkpoints. The first run holds an exclusive ``flock`` on a file in the
work dir; the kernel releases it when the process ends in any way (``kill
-9`` included), so a dead run never leaves the directory locked, and a
``--resume`` after it simply takes the lock again. Only the process of
global rank 0 locks: the other processes of a distributed run share its
work dir.
"""
import fcntl
import os
import os.path as osp
import socket
from contextlib import contextmanager
from typing import Iterator

LOCK_FILE = '.train.lock'
# Where each launcher of tools/train.py puts a process's global rank.
_RANK_VARIABLES = dict(
    pytorch='RANK', slurm='SLURM_PROCID', mpi='OMPI_COMM_WORLD_RANK')


class WorkDirError(RuntimeError):
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
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise WorkDirError(f'cannot create {path}: {err.strerror}') from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors='replace').strip()
            raise WorkDirError(
                f'work dir {work_dir} is in use by another training run '
                f'({holder or "unknown process"}): wait for it to end or '
                'choose another --work-dir') from None
        holder = f'pid {os.getpid()} on {socket.gethostname()}\n'
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)
