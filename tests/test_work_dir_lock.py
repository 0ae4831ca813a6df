"""One training run per work dir; a killed run leaves it free."""
import multiprocessing
import os
import signal

import pytest
from conftest import run_tool, write_config

from mmdet_cdetr.utils.work_dir_lock import (LOCK_FILE, WorkDirError,
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
