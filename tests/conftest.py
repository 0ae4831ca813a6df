import copy
import numpy as np
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


# --- Parity with reference implementations (tests/test_parity_*.py) ---

# Conditional DETR for the 80 COCO classes at toy size: a bottleneck
# ResNet-50 of 1/8 width (HuggingFace's ResNet mirrors it), d_model 64.
TINY_COCO_CONFIG = f"""_base_ = '{R50_CONFIG}'
embed_dims = 64
attention = dict(embed_dims=embed_dims, num_heads=4)
ffn = dict(embed_dims=embed_dims, feedforward_channels=128)
model = dict(
    num_queries=30,
    backbone=dict(base_channels=8, init_cfg=None),
    neck=dict(in_channels=[256], out_channels=embed_dims),
    positional_encoding=dict(num_feats=embed_dims // 2),
    encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attention,
                                              ffn_cfg=ffn)),
    decoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attention,
                                              cross_attn_cfg=attention,
                                              ffn_cfg=ffn)),
    bbox_head=dict(embed_dims=embed_dims))
"""
PARITY_IMAGE_SHAPES = ((160, 224), (224, 128))


def write_tiny_coco_config(path: Path, extra: str = '') -> str:
    path.write_text(TINY_COCO_CONFIG + extra)
    return str(path)


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights that keep activations in a realistic range, for every
    float parameter and buffer (BatchNorm statistics included), so that no
    zero-initialised layer hides a mismatch."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in module.state_dict(keep_vars=True).items():
            if not value.is_floating_point():
                continue
            if name.endswith('running_var'):
                new = torch.rand(value.shape, generator=gen) + 0.5
            elif value.dim() == 1 and name.endswith('weight'):  # norms
                new = torch.rand(value.shape, generator=gen) + 0.5
            elif 'embed' in name:  # query positions: spread references
                new = torch.randn(value.shape, generator=gen)
            elif value.dim() == 1:
                new = torch.randn(value.shape, generator=gen) * 0.1
            else:  # linear layers get peaky attention, as trained ones
                gain = 2. if value.dim() == 2 and 'decoder' in name else 1.
                new = torch.randn(value.shape, generator=gen) * (
                    gain / value[0].numel()**0.5)
            value.copy_(new)


def parity_batch(model: torch.nn.Module, with_gt: bool = False):
    """Two synthetic images of different sizes through ``model``'s data
    preprocessor: normalised, padded inputs and their data samples."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from mmdet_cdetr.datasets.synthetic_coco import make_image
    rng = np.random.default_rng(3)
    inputs, samples = [], []
    for h, w in PARITY_IMAGE_SHAPES:
        img, _ = make_image(rng, max(h, w), 3, 0.2, 0.5, empty_prob=0)
        inputs.append(torch.from_numpy(img[:h, :w]).permute(2, 0, 1))
        sample = DetDataSample(
            metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                          scale_factor=(1., 1.)))
        if with_gt:
            sample.gt_instances = InstanceData(
                bboxes=torch.tensor([[10., 20., 90., 120.]]),
                labels=torch.tensor([len(samples) * 17]))
        samples.append(sample)
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), False)
    return data['inputs'], data['data_samples']


def raw_predictions(model: torch.nn.Module, inputs: torch.Tensor,
                    samples: list):
    """Class logits and normalised (cx, cy, w, h) boxes of the last decoder
    layer, before post-processing."""
    with torch.no_grad():
        head_inputs = model.forward_transformer(
            model.extract_feat(inputs), samples)
        logits, boxes = model.bbox_head(**head_inputs)
    return logits[-1], boxes[-1]


def detections(model: torch.nn.Module, inputs: torch.Tensor,
               samples: list) -> list:
    """Final detections (``pred_instances``) in input-image pixels."""
    with torch.no_grad():
        results = model.predict(inputs, copy.deepcopy(samples), rescale=False)
    return [result.pred_instances for result in results]


def assert_same_detections(ours: list, theirs: list) -> None:
    """Same labels in the same order, boxes within 0.01 px, scores within
    1e-5 (each side a list of per-image objects with ``labels``,
    ``bboxes``, ``scores``)."""
    for mine, ref in zip(ours, theirs):
        assert len(mine.labels) == len(ref.labels) > 0
        assert torch.equal(mine.labels, ref.labels)
        assert (mine.scores - ref.scores).abs().max() <= 1e-5
        assert (mine.bboxes - ref.bboxes).abs().max() <= 0.01


def assert_finite_training_step(model: torch.nn.Module) -> None:
    """One loss computation and backward pass gives finite numbers."""
    model.train()
    inputs, samples = parity_batch(model, with_gt=True)
    losses = model.loss(inputs, samples)
    total = sum(value for key, value in losses.items() if 'loss' in key)
    total.backward()
    assert len(losses) > 3 and all(
        torch.isfinite(value).all() for value in losses.values())
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(grad).all() for grad in grads)
