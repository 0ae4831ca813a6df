"""Converter building blocks: label mapping, backbone detection, default
configs, bad input and the command lines' ``--help``."""
import random
import runpy
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from mmdet_cdetr.converters import (COCO_CATEGORY_IDS, COCO_CLASSES,
                                    hf_default_config, load_official,
                                    official_depth, rows_from_id2label)
from mmdet_cdetr.converters.common import rename
from mmdet_cdetr.utils import CheckpointError


@pytest.mark.parametrize(
    'tool', ['official2mmdet', 'huggingface2mmdet', 'mmdet_zoo2mmdet'])
def test_help(tool, capsys, monkeypatch):
    """In-process (the other tests run the tools as commands)."""
    path = REPO / 'tools/model_converters' / f'{tool}.py'
    monkeypatch.setattr(sys, 'argv', [str(path), '--help'])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(path), run_name='__main__')
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert '--allow-partial' in usage and '--config' in usage
    assert 'src dst' in usage


def test_coco_facts():
    assert len(COCO_CLASSES) == len(set(COCO_CATEGORY_IDS)) == 80
    assert list(COCO_CATEGORY_IDS) == sorted(COCO_CATEGORY_IDS)
    assert COCO_CATEGORY_IDS[-1] == 90
    assert {12, 26, 29, 30, 45, 66, 68, 69, 71,
            83}.isdisjoint(COCO_CATEGORY_IDS)


def test_id2label_decides_the_rows():
    """Rows follow the names in id2label, wherever they are."""
    names = list(COCO_CLASSES) + ['N/A'] * 11
    random.Random(0).shuffle(names)
    id2label = {str(row): name for row, name in enumerate(names)}
    rows = rows_from_id2label(id2label)
    assert [names[row] for row in rows] == list(COCO_CLASSES)


def test_id2label_without_coco_classes_is_refused():
    id2label = {i: name for i, name in enumerate(COCO_CLASSES[:-1])}
    id2label[79] = 'giraffe-ish'
    with pytest.raises(ValueError, match='no class named toothbrush'):
        rows_from_id2label(id2label)


def test_rename_reports_unused_keys():
    conversion = rename(
        dict(a=torch.zeros(1), b=torch.ones(1)), [(r'a', 'renamed')])
    assert list(conversion.state_dict) == ['renamed']
    assert conversion.unused == ['b']


def _official_backbone_keys(blocks):
    return {
        f'backbone.0.body.layer{stage + 1}.{block}.conv1.weight': None
        for stage, count in enumerate(blocks)
        for block in range(count)
    }


def test_official_backbone_depth():
    assert official_depth(_official_backbone_keys((3, 4, 6, 3))) == 50
    assert official_depth(_official_backbone_keys((3, 4, 23, 3))) == 101
    with pytest.raises(ValueError, match='pass --config'):
        official_depth(_official_backbone_keys((2, 2, 2, 2)))


@pytest.mark.parametrize('hf_config,name', [
    (dict(backbone='resnet50',
          use_timm_backbone=True), 'conditional_detr_r50_8x2_50e_coco.py'),
    (dict(backbone='resnet101',
          dilation=True), 'conditional_detr_r101_dc5_8x1_50e_coco.py'),
    (dict(
        backbone_config=dict(model_type='resnet', depths=[3, 4, 6, 3]),
        dilation=False), 'conditional_detr_r50_8x2_50e_coco.py'),
])
def test_hf_default_config(hf_config, name):
    path = Path(hf_default_config(hf_config))
    assert path == REPO / 'configs/conditional_detr' / name and path.is_file()


def test_not_an_official_checkpoint(tmp_path):
    path = tmp_path / 'mmdet.pth'
    torch.save(dict(state_dict={}, meta={}), path)
    with pytest.raises(CheckpointError, match='no "model" entry'):
        load_official(str(path))
