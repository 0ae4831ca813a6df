"""Bad input ends in one line that names the file, key or shapes."""
import shutil

import pytest
from conftest import run_tool, write_config


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


def _assert_clean_error(result, *needles):
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ')
    for needle in needles:
        assert needle in last


def test_missing_image(data_copy, tmp_path):
    missing = sorted((data_copy / 'train').iterdir())[0]
    missing.unlink()
    config = write_config(tmp_path / 'cfg.py', str(data_copy))
    _assert_clean_error(
        _train(config, tmp_path), 'Image not found', str(missing),
        'instances_train.json')


def test_unreadable_annotation_file(data_copy, tmp_path):
    ann = data_copy / 'annotations/instances_train.json'
    ann.write_text('{"images": [ broken')
    config = write_config(tmp_path / 'cfg.py', str(data_copy))
    _assert_clean_error(
        _train(config, tmp_path), 'Cannot read COCO annotation file', str(ann))


def test_missing_annotation_file(data_copy, tmp_path):
    ann = data_copy / 'annotations/instances_train.json'
    ann.unlink()
    config = write_config(tmp_path / 'cfg.py', str(data_copy))
    _assert_clean_error(
        _train(config, tmp_path), 'annotation file not found', str(ann))


def test_unknown_component(synthetic_root, tmp_path):
    config = write_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        model="dict(bbox_head=dict(type='NoSuchHead'))")
    _assert_clean_error(_train(config, tmp_path), 'NoSuchHead', 'registry')


def test_checkpoint_with_other_class_count(synthetic_root, tmp_path):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    assert _train(config, tmp_path).returncode == 0
    five = write_config(
        tmp_path / 'five.py',
        synthetic_root,
        model='dict(bbox_head=dict(num_classes=5))')
    result = run_tool([
        'tools/test.py', five,
        str(tmp_path / 'work/epoch_1.pth'), '--eval', 'bbox'
    ])
    _assert_clean_error(result, 'bbox_head.fc_cls.weight', '(3, 128)',
                        '(5, 128)')


def test_missing_checkpoint(synthetic_root, tmp_path):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    result = run_tool([
        'tools/test.py', config,
        str(tmp_path / 'nope.pth'), '--eval', 'bbox'
    ])
    _assert_clean_error(result, 'checkpoint not found', 'nope.pth')
