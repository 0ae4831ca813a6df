"""Bad input ends in one line that names the file, key or shapes."""
import shutil

import pytest
from conftest import assert_clean_error, run_tool, write_config


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
