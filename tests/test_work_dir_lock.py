"""One training run per work dir; a killed run leaves it free."""
import errno
import multiprocessing
import os
import signal

import pytest
from conftest import run_tool, write_config

from mmdet_cdetr.cli import work_dir_lock
from mmdet_cdetr.cli.work_dir_lock import (LOCK_FILE, WorkDirError,
                                           lock_work_dir)


def test_second_training_into_a_busy_work_dir_stops_at_once(
        synthetic_root, tmp_path):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    work_dir = tmp_path / 'work'
    with lock_work_dir(str(work_dir)):
        result = run_tool(
            ['tools/train.py', config, '--work-dir',
             str(work_dir)])
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f'error: work dir {work_dir} is in use by another training run '
        f'(pid {os.getpid()} on ')
    # It stopped before writing anything: no log dir, no checkpoint.
    assert [p.name for p in work_dir.iterdir()] == [LOCK_FILE]


def _hold(work_dir: str, ready) -> None:
    with lock_work_dir(work_dir):
        ready.set()
        signal.pause()


def test_a_killed_run_does_not_leave_the_lock_behind(tmp_path):
    context = multiprocessing.get_context('fork')
    ready = context.Event()
    holder = context.Process(target=_hold, args=(str(tmp_path), ready))
    holder.start()
    assert ready.wait(60)
    with pytest.raises(WorkDirError, match=f'pid {holder.pid} on '):
        with lock_work_dir(str(tmp_path)):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    with lock_work_dir(str(tmp_path)):
        pass


def test_only_rank_0_of_a_distributed_run_locks(tmp_path, monkeypatch):
    with lock_work_dir(str(tmp_path), 'pytorch'):
        monkeypatch.setenv('RANK', '1')
        with lock_work_dir(str(tmp_path), 'pytorch'):
            pass
        monkeypatch.setenv('RANK', '0')
        with pytest.raises(WorkDirError, match=str(tmp_path)):
            with lock_work_dir(str(tmp_path), 'pytorch'):
                pass


def test_work_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(
            WorkDirError, match=f'cannot create work dir {blocker}/work'):
        with lock_work_dir(str(blocker / 'work')):
            pass


@pytest.mark.parametrize('code', sorted(work_dir_lock.NO_FLOCK))
def test_without_a_working_flock_training_warns_once_and_goes_on(
        tmp_path, monkeypatch, code):

    def no_flock(fd, operation):
        raise OSError(code, os.strerror(code))

    warnings = []
    monkeypatch.setattr(work_dir_lock.fcntl, 'flock', no_flock)
    monkeypatch.setattr(work_dir_lock, '_warned_no_flock', False)
    monkeypatch.setattr(work_dir_lock, 'print_log',
                        lambda message, **kwargs: warnings.append(message))
    for _ in range(2):
        with lock_work_dir(str(tmp_path)):
            pass
    assert len(warnings) == 1
    assert f'cannot lock {tmp_path}/{LOCK_FILE}' in warnings[0]
    assert 'training without the work-dir lock' in warnings[0]


def test_other_flock_errors_are_not_hidden(tmp_path, monkeypatch):

    def broken(fd, operation):
        raise OSError(errno.EIO, 'Input/output error')

    monkeypatch.setattr(work_dir_lock.fcntl, 'flock', broken)
    with pytest.raises(OSError, match='Input/output error'):
        with lock_work_dir(str(tmp_path)):
            pass


def _inode_of_fd(fd: int, result) -> None:
    """What ``fd`` refers to in this process (the number may have been
    reused, e.g. for /dev/null as the child's stdin), or None."""
    try:
        result.put(os.fstat(fd).st_ino)
    except OSError:
        result.put(None)


def test_workers_do_not_inherit_the_lock(tmp_path):
    """A forked data-loader worker and an exec'd child both lack the
    descriptor: neither can keep the work dir locked."""
    context = multiprocessing.get_context('fork')
    with lock_work_dir(str(tmp_path)):
        (fd, ) = work_dir_lock._held
        assert not os.get_inheritable(fd)
        result = context.Queue()
        worker = context.Process(target=_inode_of_fd, args=(fd, result))
        worker.start()
        worker.join(60)
        lock_inode = os.stat(tmp_path / LOCK_FILE).st_ino
        assert result.get(timeout=10) != lock_inode
    assert not work_dir_lock._held
