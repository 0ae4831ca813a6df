"""Activation checkpointing (``with_cp`` of backbone, encoder and decoder)
changes memory, not results; the EMA config trains, saves and tests the
averaged weights."""
import copy

import pytest
import torch
from conftest import (REPO, batch_with_boxes, losses_and_gradients, quick_cfg,
                      randomize_, run_tool, write_config)
from mmengine.config import Config

from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.speedup import apply_speedups
from mmdet_cdetr.utils.torch_compat import load_weights_only


def _model(with_cp: bool):
    cfg = quick_cfg().model
    for part in ('backbone', 'encoder', 'decoder'):
        cfg[part].with_cp = with_cp
    model = MODELS.build(cfg)
    randomize_(model)
    return model.train()


@pytest.mark.parametrize('fast_dropout', [False, True])
def test_checkpointing_keeps_losses_and_gradients_with_dropout(fast_dropout):
    plain, checkpointed = _model(False), _model(True)
    checkpointed.load_state_dict(plain.state_dict())
    if fast_dropout:
        apply_speedups(plain)
        apply_speedups(checkpointed)
    assert 0.1 in {
        m.p
        for m in plain.modules() if isinstance(m, torch.nn.Dropout)
    }
    inputs, samples = batch_with_boxes(plain)
    plain_losses, plain_grads = losses_and_gradients(plain, inputs, samples)
    cp_losses, cp_grads = losses_and_gradients(checkpointed, inputs, samples)
    for name, value in plain_losses.items():
        torch.testing.assert_close(cp_losses[name], value, msg=name)
    assert cp_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(cp_grads[name], grad, msg=name)
    # Without the replayed random state the dropout masks would differ.
    torch.manual_seed(6)
    other = plain.loss(inputs, copy.deepcopy(samples))
    assert any(not torch.equal(other[k], v) for k, v in plain_losses.items())


def test_checkpointing_recomputes_layers_in_the_backward_pass():
    """Each checkpointed decoder layer starts twice a step: once forward
    and once when the backward pass recomputes it (a pre-hook: torch stops
    the recomputation once it has what the backward pass needs)."""
    model = _model(True)
    calls = []
    model.decoder.layers[0].register_forward_pre_hook(
        lambda *args: calls.append(torch.is_grad_enabled()))
    inputs, samples = batch_with_boxes(model)
    losses = model.loss(inputs, samples)
    assert len(calls) == 1
    sum(losses.values()).backward()
    assert len(calls) == 2
    with torch.no_grad():
        model.eval().predict(inputs, samples)
    assert len(calls) == 3


def test_flops_of_a_checkpointed_model_are_the_plain_models():
    """The benchmark counts multiply-adds by tracing; checkpointed layers
    (which cannot be traced) count as the plain ones."""
    from mmdet_cdetr.analysis.benchmark import flops_by_module
    counts = []
    for with_cp in (False, True):
        model = _model(with_cp)
        inputs, samples = batch_with_boxes(model)
        counts.append(flops_by_module(model, inputs, samples)[''])
    assert counts[0] > 0 and counts[0] == counts[1]


def test_r50_cp_config_sets_every_switch():
    cfg = Config.fromfile(
        str(REPO / 'configs/conditional_detr/'
            'conditional_detr_r50_cp_8x2_50e_coco.py'))
    assert cfg.model.backbone.with_cp
    assert cfg.model.encoder.with_cp and cfg.model.decoder.with_cp


def test_ema_checkpoints_carry_and_test_the_averaged_weights(
        synthetic_root, tmp_path):
    """Trained with the EMA config's hook, the checkpoint's ``state_dict``
    holds the averaged weights (``ema_state_dict`` the EMA model's, with
    the trained ones) and tools/test.py evaluates them."""
    ema_hook = ('dict(type="EMAHook", ema_type="ExpMomentumEMA", '
                'momentum=0.2, update_buffers=True, priority=49)')
    config = write_config(
        tmp_path / 'ema.py',
        synthetic_root,
        train_cfg='dict(max_epochs=1, val_interval=1)',
        custom_hooks=f'_base_.custom_hooks + [{ema_hook}]')
    work = tmp_path / 'work'
    result = run_tool(['tools/train.py', config, '--work-dir', str(work)])
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = load_weights_only(work / 'epoch_1.pth')
    averaged = checkpoint['state_dict']
    ema = {
        key[len('module.'):]: value
        for key, value in checkpoint['ema_state_dict'].items()
        if key.startswith('module.')
    }
    assert ema.keys() == averaged.keys()
    # The EMA model's slot holds the trained weights after the swap; they
    # differ from the averaged ones.
    differs = [k for k in averaged if not torch.equal(averaged[k], ema[k])]
    assert 'bbox_head.fc_cls.weight' in differs
    trained = tmp_path / 'trained.pth'
    torch.save(dict(checkpoint, state_dict=ema), trained)
    plain_config = write_config(tmp_path / 'plain.py', synthetic_root)
    runs = dict(
        ema_config=(config, work / 'epoch_1.pth'),
        plain_config=(plain_config, work / 'epoch_1.pth'),
        trained_weights=(plain_config, trained))
    predictions = {}
    for name, (cfg, ckpt) in runs.items():
        out = tmp_path / f'{name}.pkl'
        test = run_tool([
            'tools/test.py', cfg,
            str(ckpt), '--work-dir',
            str(tmp_path / name), '--out',
            str(out)
        ])
        assert test.returncode == 0, test.stderr[-3000:]
        predictions[name] = _scores(out)
        if name == 'ema_config':
            log = test.stdout + test.stderr
            assert ('CPU speed-ups applied: folded_batch_norms, '
                    'channels_last') in log
    # A few iterations move the weights little, so the averaged and trained
    # models' detections are close; the same weights agree far closer.
    same = (predictions['ema_config'] - predictions['plain_config']).abs()
    other = (predictions['ema_config'] - predictions['trained_weights']).abs()
    assert same.max() < 1e-5
    assert other.max() > 10 * same.max()


def _scores(path) -> torch.Tensor:
    """The detection scores and boxes (in 100 px) of every image of a
    ``tools/test.py --out`` file, in image order."""
    import pickle
    with open(path, 'rb') as f:
        results = pickle.load(f)
    return torch.cat([
        torch.cat([
            torch.as_tensor(result['pred_instances']['scores']),
            torch.as_tensor(result['pred_instances']['bboxes']).flatten() / 100
        ]) for result in sorted(results, key=lambda r: r['img_id'])
    ])
