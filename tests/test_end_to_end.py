"""Train, evaluate, save, reload and resume through the tools, on the
synthetic data, as a user would."""
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO, needs_safe_loading, run_tool

from mmdet_cdetr.utils.torch_compat import load_weights_only


def test_training_saves_checkpoints_and_evaluates(trained):
    work_dir = trained['work_dir']
    assert (work_dir / 'epoch_1.pth').is_file()
    assert (work_dir / 'epoch_2.pth').is_file()
    logs = ''.join(p.read_text() for p in work_dir.glob('*/*.log'))
    losses = [float(v) for v in re.findall(r' loss: ([0-9.]+)', logs)]
    assert len(losses) >= 8 and all(v == v and v < 1e4 for v in losses)
    assert 'coco/bbox_mAP' in logs


def test_checkpoint_loads_with_weights_only(trained):
    ckpt = load_weights_only(trained['work_dir'] / 'epoch_2.pth')
    assert ckpt['meta']['epoch'] == 2
    assert 'message_hub' in ckpt and 'optimizer' in ckpt
    assert ckpt['state_dict']['bbox_head.fc_cls.weight'].shape == (3, 128)


def test_without_allow_list_torch_refuses_the_checkpoint(trained):
    """The allow-list is what makes loading work (guards the test above)."""
    code = ('import torch, sys; torch.load(sys.argv[1], weights_only=True)')
    result = subprocess.run(
        [sys.executable, '-c', code,
         str(trained['work_dir'] / 'epoch_2.pth')],
        capture_output=True,
        text=True)
    assert result.returncode != 0
    assert 'Weights only load failed' in result.stderr


def test_test_tool_evaluates_box_ap(trained):
    out = trained['tmp'] / 'dets.pkl'
    result = run_tool([
        'tools/test.py', trained['config'],
        str(trained['work_dir'] / 'epoch_2.pth'), '--eval', 'bbox', '--out',
        str(out), '--work-dir',
        str(trained['tmp'] / 'test')
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r'coco/bbox_mAP: [0-9.]+', result.stdout)
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95' in result.stdout
    assert out.is_file() and out.stat().st_size > 0


def test_resume_continues_from_the_last_epoch(trained, tmp_path):
    work_dir = tmp_path / 'resume'
    work_dir.mkdir()
    (work_dir / 'epoch_2.pth').write_bytes(
        (trained['work_dir'] / 'epoch_2.pth').read_bytes())
    result = run_tool([
        'tools/train.py', trained['config'], '--work-dir',
        str(work_dir), '--resume',
        str(work_dir / 'epoch_2.pth'), '--cfg-options',
        'train_cfg.max_epochs=3'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    iters = load_weights_only(work_dir / 'epoch_2.pth')['meta']['iter']
    assert f'resumed epoch: 2, iter: {iters}' in result.stdout
    ckpt = load_weights_only(work_dir / 'epoch_3.pth')
    assert ckpt['meta']['epoch'] == 3
    assert ckpt['meta']['iter'] == iters * 3 // 2
    assert not (work_dir / 'epoch_1.pth').exists()


class _Evil:

    def __reduce__(self):
        return (subprocess.check_output, (['echo', 'owned'], ))


@needs_safe_loading
def test_checkpoint_with_a_pickled_callable_is_refused(trained, tmp_path):
    ckpt = load_weights_only(trained['work_dir'] / 'epoch_2.pth')
    ckpt['meta']['payload'] = _Evil()
    evil = tmp_path / 'evil.pth'
    torch.save(ckpt, evil)
    result = run_tool(
        ['tools/test.py', trained['config'],
         str(evil), '--eval', 'bbox'])
    assert result.returncode == 1
    assert 'owned' not in result.stdout
    assert f'refused to load checkpoint {evil}' in result.stderr
    assert 'check_output' in result.stderr
    assert 'Traceback' not in result.stderr


def test_dist_train_two_processes(trained, tmp_path):
    work_dir = tmp_path / 'dist'
    env = dict(os.environ, PYTHON=sys.executable, PORT='29517')
    result = run_tool([
        str(REPO / 'tools/dist_train.sh'), trained['config'], '2',
        '--work-dir',
        str(work_dir), '--cfg-options', 'train_cfg.max_epochs=1'
    ],
                      env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # The speed-up step leaves a model DDP wraps in its layout.
    assert 'Grad strides do not match' not in result.stderr
    logs = ''.join(p.read_text() for p in work_dir.glob('*/*.log'))
    assert 'Distributed training: True' in logs and 'GPU number: 2' in logs
    # each of the two processes takes half of an epoch's batches
    single = load_weights_only(trained['work_dir'] /
                               'epoch_1.pth')['meta']['iter']
    half = (single + 1) // 2
    assert f'Epoch(train) [1][{half}/{half}]' in logs
    assert (work_dir / 'epoch_1.pth').is_file()
    result = run_tool([
        'tools/test.py', trained['config'],
        str(work_dir / 'epoch_1.pth'), '--eval', 'bbox', '--work-dir',
        str(tmp_path / 'dist_test')
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'coco/bbox_mAP' in result.stdout


def test_test_tool_flip_tta_and_per_class_ap(trained):
    """--tta (mmdet's DetTTAModel on the image and its flip) and
    --eval-options classwise=True; a val_evaluator override is reported."""
    result = run_tool([
        'tools/test.py', trained['config'],
        str(trained['work_dir'] / 'epoch_2.pth'), '--tta', '--eval', 'bbox',
        '--eval-options', 'classwise=True', '--work-dir',
        str(trained['tmp'] / 'test_tta'), '--cfg-options',
        '+val_evaluator.classwise=True'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r'coco/bbox_mAP: [0-9.]+', result.stdout)
    # mmdet's per-class table: one row per class
    for name in ('square', 'circle', 'triangle'):
        assert re.search(rf'\| {name}\s+\| [0-9.]+', result.stdout), name
    assert '--cfg-options val_evaluator.* sets the evaluator' in result.stderr


def test_tensorboard_backend_from_the_command_line(trained, tmp_path):
    pytest.importorskip('tensorboard')
    work_dir = tmp_path / 'tb'
    result = run_tool([
        'tools/test.py', trained['config'],
        str(trained['work_dir'] / 'epoch_2.pth'), '--work-dir',
        str(work_dir), '--cfg-options',
        'visualizer.vis_backends.0.type=TensorboardVisBackend'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(work_dir.glob('*/vis_data/events.out.tfevents.*'))
