"""A run stopped while it saves a checkpoint (kill -9, SIGTERM, a failing
write) leaves a work dir that ``--resume`` completes, with
``max_keep_ckpts=1``: the quick start's setting and MMEngine's worst case
(it deleted epoch_1.pth before writing epoch_2.pth)."""
import errno
import io
import os
import signal
import time

import pytest
import torch
from conftest import start_tool, write_config
from mmengine.logging import MessageHub, MMLogger

from mmdet_cdetr.engine.hooks import atomic_checkpoint_hook
from mmdet_cdetr.registry import HOOKS
from mmdet_cdetr.utils import CheckpointError

# Imported by the training through custom_imports: with FAULT=hang, the save
# of epoch 2 writes half its bytes, tells the test, and waits to be killed.
FAULTS = '''
import os
import time

from mmengine.fileio import LocalBackend

FAULT, MARKER = os.environ['FAULT'], os.environ['FAULT_MARKER']
_put = LocalBackend.put


def put(self, obj, filepath):
    if FAULT != 'hang' or 'epoch_2' not in os.path.basename(str(filepath)):
        return _put(self, obj, filepath)
    with open(filepath, 'wb') as f:
        f.write(obj[:len(obj) // 2])
        f.flush()
        open(MARKER, 'w').close()
        time.sleep(300)


LocalBackend.put = put
'''


def _train(config, work_dir, tmp_path, fault, *args):
    """tools/train.py with the given fault, in the background."""
    (tmp_path / 'faults.py').write_text(FAULTS)
    env = dict(
        os.environ,
        PYTHONPATH=str(tmp_path),
        FAULT=fault,
        FAULT_MARKER=str(tmp_path / 'saving'))
    return start_tool(
        ['tools/train.py', config, '--work-dir',
         str(work_dir), *args], env)


def _signal_during_save_of_epoch_2(process, marker, sig):
    end = time.time() + 300
    while not marker.exists():
        assert process.poll() is None, process.outputs()[1][-3000:]
        assert time.time() < end, 'the save of epoch 2 never started'
        time.sleep(0.2)
    marker.unlink()
    process.send_signal(sig)
    return process.wait(timeout=120)


def _epoch(path):
    return torch.load(
        path, map_location='cpu', weights_only=True)['meta']['epoch']


def _assert_epoch_1_is_the_last_checkpoint(work_dir):
    assert _epoch(work_dir / 'epoch_1.pth') == 1
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir /
                                                             'epoch_1.pth')
    assert not (work_dir / 'epoch_2.pth').exists()


def test_kill_during_checkpoint_write_then_resume(synthetic_root, tmp_path):
    config = write_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        custom_imports="dict(imports=['mmdet_cdetr', 'faults'], "
        'allow_failed_imports=False)',
        default_hooks='dict(checkpoint=dict(interval=1, max_keep_ckpts=1))')
    work_dir, marker = tmp_path / 'work', tmp_path / 'saving'

    # kill -9 half-way through writing epoch_2.pth.
    process = _train(config, work_dir, tmp_path, 'hang')
    status = _signal_during_save_of_epoch_2(process, marker, signal.SIGKILL)
    assert status == -signal.SIGKILL
    _assert_epoch_1_is_the_last_checkpoint(work_dir)
    assert len(list(work_dir.glob('.epoch_2.pth.*.tmp'))) == 1

    # Resumed, undisturbed: the run completes and tidies up.
    process = _train(config, work_dir, tmp_path, 'none', '--resume')
    stdout, stderr = process.communicate(timeout=300)
    assert process.poll() == 0, stderr[-3000:]
    assert 'resumed epoch: 1' in stdout
    assert _epoch(work_dir / 'epoch_2.pth') == 2
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir /
                                                             'epoch_2.pth')
    assert not (work_dir / 'epoch_1.pth').exists()
    assert not list(work_dir.glob('.*.tmp'))


# --- SIGTERM and failures, on the hook with a stand-in runner ---


class _Runner:
    """What the checkpoint hook uses of MMEngine's runner; its
    ``save_checkpoint`` writes a small checkpoint, or half of it and then
    fails (``fault='error'``) or gets a SIGTERM (``fault='sigterm'``)."""

    def __init__(self, work_dir, name):
        self.work_dir = str(work_dir)
        self.logger = MMLogger.get_instance(name)
        self.message_hub = MessageHub.get_instance(name)
        self.epoch, self.iter = 0, 0
        self.fault = None
        self.errno = errno.ENOSPC

    def save_checkpoint(self, out_dir, filename, *args, meta, **kwargs):
        data = io.BytesIO()
        torch.save(dict(meta=meta), data)
        with open(os.path.join(out_dir, filename), 'wb') as f:
            if self.fault is None:
                f.write(data.getvalue())
                return
            f.write(data.getvalue()[:100])
            f.flush()
            if self.fault == 'sigterm':
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)  # the handler interrupts this
            raise OSError(self.errno, 'No space left on device (injected)')


@pytest.fixture
def saving(tmp_path, request):
    runner = _Runner(tmp_path, request.node.name)
    hook = HOOKS.build(
        dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=1))
    hook.before_train(runner)
    hook.after_train_epoch(runner)  # epoch_1.pth
    runner.epoch, runner.iter = 1, 4
    yield hook, runner
    hook.after_train(runner)


def _disk_full(tmp_path) -> str:
    """The one line a full disk ends the run with."""
    return (f'No space left on device \\(injected\\) while saving a '
            f'checkpoint in {tmp_path}; the last complete checkpoint is '
            f'{tmp_path}/epoch_1.pth: free some space and resume')


def test_disk_full_while_writing_keeps_and_names_the_previous_checkpoint(
        saving, tmp_path):
    hook, runner = saving
    runner.fault = 'error'
    with pytest.raises(CheckpointError, match=_disk_full(tmp_path)):
        hook.after_train_epoch(runner)
    _assert_epoch_1_is_the_last_checkpoint(tmp_path)
    assert not list(tmp_path.glob('.*.tmp'))


def test_other_write_errors_keep_their_traceback(saving, tmp_path):
    hook, runner = saving
    runner.fault, runner.errno = 'error', errno.EIO
    with pytest.raises(OSError, match='injected'):
        hook.after_train_epoch(runner)
    _assert_epoch_1_is_the_last_checkpoint(tmp_path)


def test_sigterm_while_writing_exits_cleanly(saving, tmp_path):
    hook, runner = saving
    # (checked first: without the hook's handler SIGTERM ends pytest)
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
    runner.fault = 'sigterm'
    with pytest.raises(SystemExit) as stop:
        hook.after_train_epoch(runner)
    assert stop.value.code == 128 + signal.SIGTERM
    _assert_epoch_1_is_the_last_checkpoint(tmp_path)
    assert not list(tmp_path.glob('.*.tmp'))


def test_failure_before_last_checkpoint_is_updated(saving, tmp_path,
                                                   monkeypatch):

    def failing(path, text):
        raise OSError(28, 'No space left on device (injected)')

    monkeypatch.setattr(atomic_checkpoint_hook, 'write_text_atomically',
                        failing)
    hook, runner = saving
    with pytest.raises(CheckpointError, match=_disk_full(tmp_path)):
        hook.after_train_epoch(runner)
    # epoch_2.pth is complete, but the old one stays until it is named.
    assert _epoch(tmp_path / 'epoch_2.pth') == 2
    assert _epoch(tmp_path / 'epoch_1.pth') == 1
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path /
                                                             'epoch_1.pth')
