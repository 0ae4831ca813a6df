"""A run stopped while it saves a checkpoint (kill -9, SIGTERM, a failing
write) leaves a work dir that ``--resume`` completes, with
``max_keep_ckpts=1``: the quick start's setting and MMEngine's worst case."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, run_tool, write_config

# Imported by the training through custom_imports: makes the save of epoch 2
# stop half-way ('hang': half the bytes written, then wait to be killed) or
# fail when last_checkpoint is about to point at it ('fail_pointer').
FAULTS = '''
import os
import time

from mmengine.fileio import LocalBackend

import mmdet_cdetr.engine.hooks.atomic_checkpoint_hook as hook

FAULT, MARKER = os.environ['FAULT'], os.environ['FAULT_MARKER']
_put, _write_text = LocalBackend.put, hook.write_text_atomically


def put(self, obj, filepath):
    if FAULT != 'hang' or 'epoch_2' not in os.path.basename(str(filepath)):
        return _put(self, obj, filepath)
    with open(filepath, 'wb') as f:
        f.write(obj[:len(obj) // 2])
        f.flush()
        open(MARKER, 'w').close()
        time.sleep(300)


def write_text(path, text):
    if FAULT == 'fail_pointer' and 'epoch_2' in text:
        raise OSError(28, 'No space left on device (injected)')
    _write_text(path, text)


LocalBackend.put = put
hook.write_text_atomically = write_text
'''


def _start(config, work_dir, tmp_path, fault):
    (tmp_path / 'faults.py').write_text(FAULTS)
    env = dict(
        os.environ,
        PYTHONPATH=f'{REPO}:{tmp_path}',
        FAULT=fault,
        FAULT_MARKER=str(tmp_path / 'saving'))
    return subprocess.Popen(
        [sys.executable, 'tools/train.py', config, '--work-dir',
         str(work_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True)


def _wait_for(path, process, timeout=300):
    end = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.time() < end, 'the save of epoch 2 never started'
        time.sleep(0.2)


def _epoch(path):
    return torch.load(path, map_location='cpu', weights_only=True)['meta'][
        'epoch']


def _config(synthetic_root, tmp_path):
    return write_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        custom_imports="dict(imports=['mmdet_cdetr', 'faults'], "
        'allow_failed_imports=False)',
        default_hooks='dict(checkpoint=dict(interval=1, max_keep_ckpts=1))')


def _assert_resumes_to_epoch_2(config, work_dir):
    result = run_tool(
        ['tools/train.py', config, '--work-dir',
         str(work_dir), '--resume'])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'resumed epoch: 1' in result.stdout
    assert _epoch(work_dir / 'epoch_2.pth') == 2
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir /
                                                             'epoch_2.pth')
    assert not (work_dir / 'epoch_1.pth').exists()
    assert not list(work_dir.glob('.*.tmp'))


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGTERM])
def test_signal_during_checkpoint_write(synthetic_root, tmp_path, sig):
    config = _config(synthetic_root, tmp_path)
    work_dir = tmp_path / 'work'
    process = _start(config, work_dir, tmp_path, 'hang')
    _wait_for(tmp_path / 'saving', process)
    partial = list(work_dir.glob('.epoch_2.pth.*.tmp'))
    assert len(partial) == 1 and not (work_dir / 'epoch_2.pth').exists()
    process.send_signal(sig)
    returncode = process.wait(timeout=120)
    # The previous checkpoint is still there, complete, and named.
    assert _epoch(work_dir / 'epoch_1.pth') == 1
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir /
                                                             'epoch_1.pth')
    if sig == signal.SIGTERM:  # a clean exit removes the partial file
        assert returncode == 128 + signal.SIGTERM
        assert not partial[0].exists()
    else:
        assert returncode == -signal.SIGKILL and partial[0].exists()
    _assert_resumes_to_epoch_2(config, work_dir)


def test_failure_before_last_checkpoint_is_updated(synthetic_root, tmp_path):
    config = _config(synthetic_root, tmp_path)
    work_dir = tmp_path / 'work'
    process = _start(config, work_dir, tmp_path, 'fail_pointer')
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1 and 'injected' in stderr
    # epoch_2.pth is complete, but the old one stays until it is named.
    assert _epoch(work_dir / 'epoch_2.pth') == 2
    assert _epoch(work_dir / 'epoch_1.pth') == 1
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir /
                                                             'epoch_1.pth')
    _assert_resumes_to_epoch_2(config, work_dir)
