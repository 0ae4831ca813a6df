"""The CPU speed-ups (:mod:`mmdet_cdetr.speedup`): the faster dropout is a
dropout (rate, scale, gradient, reproducibility), attention with it equals
the written-out formula; :func:`apply_speedups` is the one step that applies
them, leaves the model's results and state dict alone, and is what the
configs' ``SpeedUpHook`` runs; a built model holds only stock modules."""
import argparse
import copy
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from conftest import (R50_CONFIG, REPO, batch_with_boxes, build_model,
                      losses_and_gradients, parity_batch, randomize_, run_tool,
                      without_dropout, write_config)
from mmengine.config import Config
from torch import nn

from mmdet_cdetr.cli import build_runner, load_config
from mmdet_cdetr.engine import SpeedUpHook
from mmdet_cdetr.models.layers.attention import (attention_weights,
                                                 multi_head_attention)
from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.speedup import (FastDropout, NormFoldedIntoConv,
                                 apply_speedups, dropout, keep_mask,
                                 speedup_setting, speedups_wanted,
                                 use_fast_dropout)
from mmdet_cdetr.speedup.fast_dropout import KeptTimesScale
from mmdet_cdetr.utils import ConfigError

NUMEL = 1_000_000
# Six standard deviations of the dropped fraction of NUMEL elements.
RATE_TOLERANCE = 6 * (0.1 * 0.9 / NUMEL)**0.5


def test_dropout_rate_scale_and_gradient():
    x = torch.ones(NUMEL, requires_grad=True)
    out = dropout(x, 0.1)
    dropped = out == 0
    assert abs(dropped.float().mean().item() - 0.1) < RATE_TOLERANCE
    kept = out[~dropped]
    assert torch.all(kept == torch.tensor(1 / 0.9))
    out.sum().backward()
    # d(out)/dx is the scaled mask, which for x = 1 is out itself.
    torch.testing.assert_close(x.grad, out.detach(), rtol=0, atol=0)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('scale', [1., 1 / 0.9])
def test_kept_times_scale_is_the_product_and_holds_only_the_mask(dtype, scale):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 7, generator=generator).to(dtype).requires_grad_()
    keep = (torch.rand(3, 5, 7, generator=generator) > 0.3).to(torch.uint8)
    grad = torch.randn(3, 5, 7, generator=generator).to(dtype)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = KeptTimesScale.apply(x, keep, scale)
    out.backward(grad)
    mask = keep.to(dtype) * torch.tensor(scale, dtype=dtype)
    assert out.dtype == dtype
    assert torch.equal(out, x.detach() * mask)
    assert torch.equal(x.grad, grad * mask)
    # One byte per element until the backward, not a cast mask.
    assert [t.dtype for t in saved] == [torch.uint8]


def test_keep_mask_rate_and_no_repeats():
    mask = keep_mask((2, NUMEL // 2), 0.3)
    assert mask.dtype == torch.uint8
    assert mask.max() == 1
    assert abs(mask.float().mean().item() - 0.7) < 6 * (0.21 / NUMEL)**0.5
    # Consecutive draws (and the two rows) are different streams.
    assert not torch.equal(mask[0], mask[1])
    assert not torch.equal(mask, keep_mask((2, NUMEL // 2), 0.3))


def test_keep_mask_resolves_rates_finer_than_its_first_byte():
    # 25.5 / 256: deciding on the first 8 random bits alone would drop
    # 25 / 256 or 26 / 256 of the elements, 13 standard deviations away.
    numel, p = 4 * NUMEL, 25.5 / 256
    dropped = 1 - keep_mask((numel, ), p).float().mean().item()
    assert abs(dropped - p) < 6 * (p * (1 - p) / numel)**0.5


def test_dropout_follows_torch_manual_seed():
    x = torch.randn(1000)
    torch.manual_seed(5)
    first = dropout(x, 0.5)
    torch.manual_seed(5)
    again = dropout(x, 0.5)
    assert torch.equal(first, again)
    assert not torch.equal(first, dropout(x, 0.5))


def test_dropout_edge_cases():
    x = torch.randn(100, 10)
    assert dropout(x, 0.1, training=False) is x
    assert torch.equal(dropout(x, 0.), x)
    assert torch.equal(dropout(x, 1.), torch.zeros_like(x))
    half = dropout(x.bfloat16(), 0.2)
    assert half.dtype == torch.bfloat16
    with pytest.raises(ValueError, match='dropout probability'):
        dropout(x, -0.1)


def test_attention_with_dropout_is_the_formula():
    generator = torch.Generator().manual_seed(2)
    q, k = (
        torch.randn(2, 4, 7, 16, generator=generator).requires_grad_()
        for _ in range(2))
    k = k[:, :, :6]
    v = torch.randn(2, 4, 6, 8, generator=generator).requires_grad_()
    blocked = torch.zeros(2, 1, 1, 6, dtype=torch.bool)
    blocked[1, ..., 4:] = True
    torch.manual_seed(7)
    out = multi_head_attention(q, k, v, blocked, FastDropout(0.25))
    torch.manual_seed(7)
    mask = keep_mask((2, 4, 7, 6), 0.25)
    logits = q @ k.transpose(-2, -1) / 4
    weights = logits.masked_fill(blocked, float('-inf')).softmax(-1)
    expected = (weights * mask / 0.75) @ v
    expected = expected.transpose(1, 2).flatten(2)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.sum(), (q, k, v))
    for grad, reference in zip(grads, expected_grads):
        torch.testing.assert_close(grad, reference, rtol=1e-5, atol=1e-6)
    # Padded keys get no weight, so their values get no gradient.
    assert grads[2][1, :, 4:].abs().max() == 0
    torch.testing.assert_close(
        attention_weights(q, k, blocked), weights, rtol=0, atol=1e-6)


def test_use_fast_dropout_keeps_probabilities_and_state():
    module = nn.Sequential(
        nn.Linear(4, 4), nn.Dropout(0.3),
        nn.Sequential(nn.ReLU(), nn.Dropout(0.2)))
    state = module.state_dict()
    module[2].eval()
    assert use_fast_dropout(module) == 2
    assert [type(m) for m in module.modules()].count(FastDropout) == 2
    assert module[1].training and not module[2][1].training
    assert (module[1].p, module[2][1].p) == (0.3, 0.2)
    assert module.state_dict().keys() == state.keys()
    module.eval()
    x = torch.randn(3, 4)
    torch.testing.assert_close(module(x), F.relu(module[0](x)))


# --- the model as built, and the one step that speeds it up ---

ALLOWED_MODULE_PREFIXES = ('torch.', 'mmcv.', 'mmengine.', 'mmdet.',
                           'mmdet_cdetr.models.')


def test_r50_model_is_built_of_stock_and_paper_modules_only():
    cfg = Config.fromfile(R50_CONFIG)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    foreign = {
        f'{type(m).__module__}.{type(m).__name__}'
        for m in model.modules()
        if not type(m).__module__.startswith(ALLOWED_MODULE_PREFIXES)
    }
    assert not foreign
    assert not any(isinstance(m, FastDropout) for m in model.modules())
    assert model.backbone.conv1.weight.is_contiguous()


@pytest.mark.parametrize('folder', ['mmdet_cdetr', 'tools'])
def test_no_private_torch_api_patching_or_allocator_calls(folder):
    needles = ('torch.ops.', 'torch._C', '__class__ =', 'mallopt',
               '_global_forward_hooks', 'torch._dynamo', '._version')
    found = [
        f'{path.relative_to(REPO)}: {needle}'
        for path in (REPO / folder).rglob('*.py') for needle in needles
        if needle in path.read_text()
    ]
    assert not found


def test_training_speedups_keep_losses_gradients_and_state():
    """Channels-last backbone and neck, fast dropout: same state dict, same
    losses and gradients (to float32 rounding) with dropout off, each
    gradient in its weight's layout (DDP buckets follow the parameters'
    strides)."""
    plain = without_dropout(build_model(1)).train()
    fast = copy.deepcopy(plain)
    assert apply_speedups(fast) == [
        'folded_batch_norms', 'channels_last', 'fast_dropout'
    ]
    assert fast.state_dict().keys() == plain.state_dict().keys()
    dropouts = [m for m in fast.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(type(m) is FastDropout for m in dropouts)
    assert fast.backbone.conv1.weight.is_contiguous(
        memory_format=torch.channels_last)
    inputs, samples = batch_with_boxes(plain)
    plain_losses, plain_grads = losses_and_gradients(plain, inputs, samples)
    fast_losses, fast_grads = losses_and_gradients(fast, inputs, samples)
    for name, value in plain_losses.items():
        torch.testing.assert_close(
            fast_losses[name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert fast_grads.keys() == plain_grads.keys()
    # NHWC and NCHW kernels sum in other orders; through this randomised,
    # peaky network (batch-norm statistics in training mode) that reaches
    # 1% of a gradient's norm. A wrong gradient is off by its whole norm.
    total = torch.cat([g.flatten() for g in plain_grads.values()]).norm()
    for name, grad in plain_grads.items():
        error = (fast_grads[name] - grad).norm()
        assert error <= 0.05 * grad.norm() + 1e-3 * total, name
    for name, param in fast.named_parameters():
        if param.dim() == 4 and param.grad is not None:
            assert param.grad.stride() == param.stride(), name


def test_inference_speedups_fold_batch_norms_and_keep_detections():

    plain = build_model(3)
    randomize_(plain)
    plain.eval()
    fast = copy.deepcopy(plain)
    assert apply_speedups(
        fast, inference=True) == ['folded_batch_norms', 'channels_last']
    norms = [
        m for m in fast.backbone.modules() if isinstance(m, nn.BatchNorm2d)
    ]
    assert norms and all(type(m) is NormFoldedIntoConv for m in norms)
    inputs, samples = parity_batch(plain)
    with torch.no_grad():
        ours = fast.predict(inputs, copy.deepcopy(samples), rescale=False)
        theirs = plain.predict(inputs, copy.deepcopy(samples), rescale=False)
    for a, b in zip(ours, theirs):
        a, b = a.pred_instances, b.pred_instances
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-4)
        torch.testing.assert_close(a.bboxes, b.bboxes, rtol=0, atol=0.05)


def test_speedup_switch_values():
    assert speedups_wanted('auto', 'cpu')
    assert not speedups_wanted('auto', 'cuda')
    assert not speedups_wanted('auto', torch.device('cuda', 1))
    assert speedups_wanted(True, 'cuda') and not speedups_wanted(False, 'cpu')
    with pytest.raises(ConfigError, match="'cpu-only'"):
        SpeedUpHook(enable='cpu-only')
    assert speedup_setting(None) is False
    assert speedup_setting([dict(type='SyncBuffersHook')]) is False
    assert speedup_setting([dict(type='SpeedUpHook', enable=False)]) is False
    assert speedup_setting([dict(type='mmdet_cdetr.SpeedUpHook')]) == 'auto'


@pytest.mark.parametrize('enable, applied', [("'auto'", True),
                                             ('False', False)])
def test_speedup_hook_in_train_and_test_logs_one_line(synthetic_root, tmp_path,
                                                      enable, applied):
    """tools/train.py and tools/test.py apply the config's speed-ups (one
    log line each) or, switched off, none; the process environment and
    SIGTERM's handler are as before the run."""
    hooks = ("[hook if hook['type'] != 'SpeedUpHook' else "
             f"dict(type='SpeedUpHook', enable={enable}) "
             'for hook in _base_.custom_hooks]')
    config = write_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        train_cfg='dict(max_epochs=1, val_interval=1)',
        custom_hooks=hooks)
    work = tmp_path / 'work'
    train = run_tool(['tools/train.py', config, '--work-dir', str(work)])
    assert train.returncode == 0, train.stderr[-3000:]
    test = run_tool([
        'tools/test.py', config,
        str(work / 'epoch_1.pth'), '--work-dir',
        str(work)
    ])
    assert test.returncode == 0, test.stderr[-3000:]
    for result, names in ((train,
                           'folded_batch_norms, channels_last, fast_dropout'),
                          (test, 'folded_batch_norms, channels_last')):
        lines = [
            line for line in (result.stdout + result.stderr).splitlines()
            if 'CPU speed-ups applied' in line
        ]
        assert len(lines) == int(applied), lines
        if applied:
            assert names in lines[0]
    assert 'bbox_mAP' in test.stdout + test.stderr


def test_the_package_leaves_the_process_alone(synthetic_root, tmp_path):
    """Building and running a runner changes no environment variable and
    restores SIGTERM's handler when training ends."""

    config = write_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        train_cfg='dict(max_epochs=1, val_interval=1)')
    environ = dict(os.environ)
    handler = signal.getsignal(signal.SIGTERM)
    args = argparse.Namespace(
        config=config,
        launcher='none',
        cfg_options=None,
        work_dir=str(tmp_path / 'work'),
        local_rank=0)
    runner = build_runner(load_config(args))
    runner.train()
    assert dict(os.environ) == environ
    assert signal.getsignal(signal.SIGTERM) == handler
