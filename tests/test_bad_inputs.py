"""Bad input ends in one line that names the file, key or shapes."""
import os
import runpy
import shutil
import sys

import pytest
import torch
from conftest import REPO, assert_clean_error, run_tool, write_config


@pytest.fixture
def data_copy(synthetic_root, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(synthetic_root, root)
    return root


def _train(config, tmp_path):
    return run_tool([
        'tools/train.py', config, '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', 'train_cfg.max_epochs=1'
    ])


def test_missing_image(data_copy, tmp_path):
    missing = sorted((data_copy / 'train').iterdir())[0]
    missing.unlink()
    config = write_config(tmp_path / 'cfg.py', str(data_copy))
    assert_clean_error(
        _train(config, tmp_path), 'Image not found', str(missing),
        'instances_train.json')


def test_unreadable_annotation_file(data_copy, tmp_path):
    ann = data_copy / 'annotations/instances_train.json'
    ann.write_text('{"images": [ broken')
    config = write_config(tmp_path / 'cfg.py', str(data_copy))
    assert_clean_error(
        _train(config, tmp_path), 'Cannot read COCO annotation file', str(ann))


def test_missing_annotation_file(data_copy, tmp_path):
    ann = data_copy / 'annotations/instances_train.json'
    ann.unlink()
    config = write_config(tmp_path / 'cfg.py', str(data_copy))
    assert_clean_error(
        _train(config, tmp_path), 'annotation file not found', str(ann))


def test_unknown_component(synthetic_root, tmp_path):
    config = write_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        model="dict(bbox_head=dict(type='NoSuchHead'))")
    assert_clean_error(_train(config, tmp_path), 'NoSuchHead', 'registry')


def test_checkpoint_with_other_class_count(synthetic_root, tmp_path):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    assert _train(config, tmp_path).returncode == 0
    loader = ('dict(batch_size=8, num_workers=0, persistent_workers=False, '
              'dataset=dict(data_root=data_root, metainfo=metainfo))')
    two = write_config(
        tmp_path / 'two.py',
        synthetic_root,
        metainfo="dict(classes=('square', 'circle'))",
        val_dataloader=loader,
        test_dataloader='val_dataloader',
        model='dict(bbox_head=dict(num_classes=2))')
    result = run_tool([
        'tools/test.py', two,
        str(tmp_path / 'work/epoch_1.pth'), '--eval', 'bbox'
    ])
    assert_clean_error(result, 'bbox_head.fc_cls.weight', '(3, 128)',
                       '(2, 128)')


def test_missing_checkpoint(synthetic_root, tmp_path):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    result = run_tool([
        'tools/test.py', config,
        str(tmp_path / 'nope.pth'), '--eval', 'bbox'
    ])
    assert_clean_error(result, 'checkpoint not found', 'nope.pth')


# --- Long runs: checkpoints, work dir, config (in-process: no start-up) ---


def _run_in_process(monkeypatch, capsys, tool, *args):
    """``tools/<tool>`` with ``args`` in this process: its exit status and
    the last line it wrote to stderr."""
    monkeypatch.setattr(sys, 'argv', [tool, *map(str, args)])
    monkeypatch.delenv('MMDET_CDETR_TRACEBACK', raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / 'tools' / tool), run_name='__main__')
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines(
    )[-1]


@pytest.fixture
def good_checkpoint(tmp_path):
    path = tmp_path / 'good.pth'
    torch.save(dict(state_dict=dict(w=torch.arange(4096.))), path)
    return path


@pytest.mark.parametrize('damage, needle', [
    (lambda data: data[:len(data) // 2], 'is truncated'),
    (lambda data: b'', 'is empty (0 bytes)'),
    (lambda data: b'\0' + os.urandom(len(data)), 'is not a valid PyTorch'),
])
def test_damaged_checkpoint(synthetic_root, tmp_path, good_checkpoint,
                            monkeypatch, capsys, damage, needle):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(damage(good_checkpoint.read_bytes()))
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    code, line = _run_in_process(monkeypatch, capsys, 'test.py', config, bad,
                                 '--work-dir', tmp_path / 'work')
    assert code == 1
    assert line.startswith(f'error: checkpoint {bad} {needle}') or \
        line.startswith(f'error: {bad} {needle}')


def test_empty_last_checkpoint(synthetic_root, tmp_path, monkeypatch, capsys):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text('\n')
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    code, line = _run_in_process(monkeypatch, capsys, 'train.py', config,
                                 '--work-dir', work_dir, '--resume')
    assert code == 1
    assert line.startswith(f'error: {work_dir}/last_checkpoint is empty')


def test_work_dir_that_is_not_writable(synthetic_root, tmp_path, monkeypatch,
                                       capsys):
    (tmp_path / 'file').write_text('')
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    code, line = _run_in_process(monkeypatch, capsys, 'train.py', config,
                                 '--work-dir', tmp_path / 'file/work')
    assert code == 1
    assert line == (f'error: cannot create work dir {tmp_path}/file/work: '
                    'Not a directory')


def test_misspelt_cfg_options_key(synthetic_root, tmp_path, monkeypatch,
                                  capsys):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    code, line = _run_in_process(monkeypatch, capsys, 'train.py', config,
                                 '--work-dir', tmp_path / 'work',
                                 '--cfg-options', 'train_cfg.max_epoch=1')
    assert code == 1
    assert line.startswith('error: --cfg-options train_cfg.max_epoch: ')
    assert "unexpected keyword argument 'max_epoch'" in line


def test_config_with_a_syntax_error(synthetic_root, tmp_path, monkeypatch,
                                    capsys):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    with open(config, 'a') as f:
        f.write('model = dict(num_queries=10,,)\n')
    lines = open(config).read().count('\n')
    code, line = _run_in_process(monkeypatch, capsys, 'train.py', config)
    assert code == 1
    assert line.startswith(
        f'error: syntax error in config {config}, line {lines}: ')
    # In a base config, the base is named.
    child = tmp_path / 'child.py'
    child.write_text("_base_ = './cfg.py'\n")
    code, line = _run_in_process(monkeypatch, capsys, 'train.py', child)
    assert code == 1
    assert line.startswith(
        f'error: syntax error in config {config}, line {lines}: ')
