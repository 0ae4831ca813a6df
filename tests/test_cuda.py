"""Checks of the CUDA side (marker ``cuda``: skipped without a CUDA device).
``tools/misc/gpu_check.sh`` runs them with the GPU benchmark.

The model's code has no device branches; what differs by device is the
``SpeedUpHook`` default (off on CUDA), PyTorch's kernels, fp16 and bf16
autocast (mmengine's ``AmpOptimWrapper``), and NCCL."""
import copy
import os
import sys

import pytest
import torch
from conftest import (REPO, batch_with_boxes, build_model, parity_batch,
                      randomize_, run_tool, without_dropout, write_config)
from mmengine.optim import AmpOptimWrapper

from mmdet_cdetr.models.layers.attention import multi_head_attention
from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.speedup import FastDropout, model_device, speedups_wanted


@pytest.mark.cuda
def test_cuda_model_is_built_as_configured():
    """NCHW backbone, stock dropout: no speed-up on CUDA by default."""
    cfg = _r50_cfg()
    model = MODELS.build(cfg.model).to('cuda')
    assert model_device(model).type == 'cuda'
    assert not speedups_wanted('auto', model_device(model))
    assert model.backbone.conv1.weight.is_contiguous()
    assert not any(isinstance(m, FastDropout) for m in model.modules())


def _r50_cfg():
    from mmengine.config import Config
    cfg = Config.fromfile(
        REPO / 'configs/conditional_detr/conditional_detr_r50_8x2_50e_coco.py')
    cfg.model.backbone.init_cfg = None
    return cfg


def _on_cuda(model):
    return copy.deepcopy(model).to('cuda')


@pytest.mark.cuda
def test_cuda_outputs_equal_cpu_outputs():
    model = build_model(3)
    randomize_(model)
    model.eval()
    inputs, samples = parity_batch(model)
    with torch.no_grad():
        cpu = model.predict(inputs, copy.deepcopy(samples), rescale=False)
        gpu_model = _on_cuda(model)
        gpu = gpu_model.predict(
            inputs.to('cuda'), copy.deepcopy(samples), rescale=False)
    for ours, reference in zip(gpu, cpu):
        ours, reference = ours.pred_instances, reference.pred_instances
        assert torch.equal(ours.labels.cpu()[:10], reference.labels[:10])
        torch.testing.assert_close(
            ours.scores.cpu(), reference.scores, atol=1e-4, rtol=0)
        torch.testing.assert_close(
            ours.bboxes.cpu(), reference.bboxes, atol=0.05, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_amp_training_step_is_finite(dtype):
    if dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
        pytest.skip('this GPU has no bf16')
    model = without_dropout(build_model(3)).train().to('cuda')
    inputs, samples = batch_with_boxes(model)
    wrapper = AmpOptimWrapper(
        optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4), dtype=dtype)
    for _ in range(2):
        with wrapper.optim_context(model):
            losses = model.loss(inputs.to('cuda'), copy.deepcopy(samples))
        assert all(torch.isfinite(v) for v in losses.values())
        assert all(v.dtype == torch.float32 for v in losses.values())
        wrapper.update_params(sum(losses.values()))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.cuda
def test_attention_with_dropout_on_cuda():
    """Dropout on materialised weights (the training path): dropped weights
    are rescaled, so the mean over many draws is the attention without
    dropout; single draws differ from it."""
    generator = torch.Generator().manual_seed(0)
    q, k = (
        torch.randn(1, 2, 5, 16, generator=generator).to('cuda')
        for _ in range(2))
    v = torch.randn(1, 2, 5, 8, generator=generator).to('cuda')
    blocked = torch.zeros(1, 1, 1, 5, dtype=torch.bool, device='cuda')
    blocked[..., 4] = True
    exact = multi_head_attention(q, k, v, blocked, torch.nn.Dropout(0.))
    dropout = torch.nn.Dropout(0.1)
    draws = torch.stack(
        [multi_head_attention(q, k, v, blocked, dropout) for _ in range(4000)])
    assert not torch.equal(draws[0], exact)
    torch.testing.assert_close(draws.mean(0), exact, atol=0.03, rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason='NCCL needs two GPUs')
def test_two_gpu_training(synthetic_root, tmp_path):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    env = dict(os.environ, PYTHON=sys.executable, PORT='29541')
    result = run_tool([
        str(REPO / 'tools/dist_train.sh'), config, '2', '--work-dir',
        str(tmp_path / 'work'), '--amp', '--cfg-options',
        'train_cfg.max_epochs=1'
    ],
                      env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
