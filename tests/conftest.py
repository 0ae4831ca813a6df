import os
import os.path as osp
import pytest
import subprocess
import sys
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from pathlib import Path
from typing import List, Optional

import mmdet_cdetr  # noqa: F401  (registers the components)
from mmdet_cdetr.datasets import make_synthetic_coco
from mmdet_cdetr.registry import MODELS

REPO = Path(__file__).resolve().parents[1]
QUICK_CONFIG = str(REPO /
                   'configs/quickstart/conditional_detr_r18_synthetic.py')
R50_CONFIG = str(REPO / 'configs/conditional_detr_r50_8x2_50e_coco.py')


@pytest.fixture(autouse=True)
def _scope_and_seed():
    init_default_scope('mmdet_cdetr')
    torch.manual_seed(0)


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory) -> str:
    """A small synthetic COCO set (the demo's generator, fewer images)."""
    root = str(tmp_path_factory.mktemp('synthetic_coco'))
    make_synthetic_coco(root, num_train=32, num_val=16, seed=1)
    return root


def quick_cfg(data_root: str = 'data/synthetic_coco/') -> Config:
    """The quick-start config pointed at ``data_root``, tiny and fast."""
    cfg = Config.fromfile(QUICK_CONFIG)
    for loader in (cfg.train_dataloader, cfg.val_dataloader,
                   cfg.test_dataloader):
        loader.dataset.data_root = data_root
        loader.num_workers = 0
        loader.persistent_workers = False
    ann = osp.join(data_root, 'annotations/instances_val.json')
    cfg.val_evaluator.ann_file = ann
    cfg.test_evaluator.ann_file = ann
    return cfg


def build_quick_model(**head_overrides) -> torch.nn.Module:
    cfg = quick_cfg()
    cfg.model.bbox_head.update(head_overrides)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def run_tool(args: List[str],
             timeout: int = 600,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run a ``tools/`` command line with this interpreter, from the repo."""
    env = dict(os.environ if env is None else env, PYTHONPATH=str(REPO))
    env.pop('MMDET_CDETR_TRACEBACK', None)
    cmd = args if args[0].endswith('.sh') else [sys.executable] + args
    return subprocess.run(
        cmd,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout)


def write_config(path: Path, data_root: str, **overrides: str) -> str:
    """A config inheriting the quick-start one, on ``data_root``, tiny."""
    lines = [
        f"_base_ = '{QUICK_CONFIG}'",
        f"data_root = '{data_root}/'",
        "ann_val = data_root + 'annotations/instances_val.json'",
        'train_dataloader = dict(batch_size=8, num_workers=0, '
        'persistent_workers=False, dataset=dict(data_root=data_root))',
        'val_dataloader = dict(batch_size=8, num_workers=0, '
        'persistent_workers=False, dataset=dict(data_root=data_root))',
        'test_dataloader = val_dataloader',
        'val_evaluator = dict(ann_file=ann_val)',
        'test_evaluator = val_evaluator',
        'train_cfg = dict(max_epochs=2, val_interval=2)',
        'default_hooks = dict(checkpoint=dict(interval=1, '
        'max_keep_ckpts=3), logger=dict(interval=1))',
    ] + [f'{key} = {value}' for key, value in overrides.items()]
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


@pytest.fixture(scope='session')
def trained(tmp_path_factory, synthetic_root) -> dict:
    """The tiny config trained for 2 epochs through tools/train.py (shared
    by the end-to-end and the visualisation tests)."""
    tmp = tmp_path_factory.mktemp('e2e')
    config = write_config(tmp / 'tiny.py', synthetic_root)
    work_dir = tmp / 'work'
    result = run_tool(['tools/train.py', config, '--work-dir', str(work_dir)])
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(config=config, work_dir=work_dir, tmp=tmp, log=result.stdout)
