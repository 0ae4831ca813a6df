"""Mixed precision on the CPU (bf16 autocast, what ``--amp`` selects
here): training steps run and stay close to float32, the attention kernels
equal the plain computation under bf16, and what needs float32 (matching
costs, losses, box logits, reference points) gets it."""
import copy
import logging

import pytest
import torch
from conftest import (R50_CONFIG, batch_with_boxes, build_model, parity_batch,
                      randomize_, raw_predictions, run_tool, tiny_loader,
                      without_dropout, write_config)
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from torch.profiler import ProfilerActivity, profile

from mmdet_cdetr.engine import BF16OptimWrapper
from mmdet_cdetr.models.layers import ConditionalAttention
from mmdet_cdetr.models.layers.attention import multi_head_attention
from mmdet_cdetr.registry import MODELS, OPTIM_WRAPPERS
from mmdet_cdetr.utils import autocast_warning

bf16_autocast = torch.autocast('cpu', dtype=torch.bfloat16)


def _loss_and_grads(model, inputs, samples, autocast: bool):
    model.zero_grad()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        losses = model.loss(inputs, copy.deepcopy(samples))
    sum(losses.values()).backward()
    grads = torch.cat(
        [p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return {k: v.detach() for k, v in losses.items()}, grads


def _r50_model():
    cfg = Config.fromfile(R50_CONFIG).model
    cfg.backbone.init_cfg = None
    model = MODELS.build(cfg)
    randomize_(model)
    return model


@pytest.mark.parametrize('name', ['r50', 'group-k3'])
def test_bf16_training_step_is_close_to_float32(name):
    """Same weights and batch, dropout off: every loss within 3% of
    float32's and the whole gradient within 3% in direction and norm.

    bf16 keeps 8 significant bits (relative rounding 2**-9 per operation);
    through 50 backbone layers and 6 decoder layers the errors add up to
    about a percent, while a wrong cast (an fp16 overflow, bf16 boxes or
    costs) would change the matching and the losses by far more.
    """
    model = _r50_model() if name == 'r50' else build_model(3)
    model = without_dropout(model).train()
    inputs, samples = batch_with_boxes(model)
    full, full_grads = _loss_and_grads(model, inputs, samples, False)
    mixed, mixed_grads = _loss_and_grads(model, inputs, samples, True)
    assert mixed.keys() == full.keys() and len(full) >= 9
    for key, value in full.items():
        assert mixed[key].dtype == torch.float32
        assert torch.isfinite(mixed[key])
        assert abs(mixed[key] - value) <= 0.03 * abs(value), key
    assert torch.isfinite(mixed_grads).all()
    cosine = torch.nn.functional.cosine_similarity(mixed_grads, full_grads, 0)
    assert cosine > 0.97
    assert abs(mixed_grads.norm() / full_grads.norm() - 1) < 0.03


def test_matching_and_losses_run_in_float32(monkeypatch):
    """Under bf16 autocast the assigner sees float32 predictions with
    autocast off (scipy takes no bf16; fp16 costs overflow to inf)."""
    model = without_dropout(build_model(3)).train()
    assigner = model.bbox_head.assigner
    seen = []
    assign = assigner.assign

    def spy(pred_instances, gt_instances, img_meta=None, **kwargs):
        seen.append((pred_instances.scores.dtype, pred_instances.bboxes.dtype,
                     torch.is_autocast_enabled('cpu')))
        return assign(pred_instances, gt_instances, img_meta, **kwargs)

    monkeypatch.setattr(assigner, 'assign', spy)
    inputs, samples = batch_with_boxes(model)
    with bf16_autocast:
        assert torch.is_autocast_enabled('cpu')
        hidden = model.forward_transformer(
            model.extract_feat(inputs), samples)['hidden_states']
        assert hidden.dtype == torch.bfloat16  # the transformer is mixed
        model.loss(inputs, samples)
    assert len(seen) == 3 * 2  # 3 decoder layers x 2 images
    assert set(seen) == {(torch.float32, torch.float32, False)}


def test_bf16_predictions_are_float32_and_close():
    """Inference under autocast: float32 logits, boxes and detections
    (boxes are not rounded to bf16's 1/256), close to float32 inference:
    normalised boxes within 0.01, logits within 0.1 (measured: 0.002 and
    0.04 on random R50 weights)."""
    model = _r50_model().eval()
    inputs, samples = parity_batch(model)
    logits, boxes = raw_predictions(model, inputs, samples)
    with bf16_autocast:
        mixed_logits, mixed_boxes = raw_predictions(model, inputs, samples)
        with torch.no_grad():
            results = model.predict(inputs, copy.deepcopy(samples))
    assert mixed_logits.dtype == mixed_boxes.dtype == torch.float32
    assert (mixed_boxes - boxes).abs().max() < 0.01
    assert (mixed_logits - logits).abs().max() < 0.1
    for result in results:
        detections = result.pred_instances
        assert detections.bboxes.dtype == detections.scores.dtype
        assert detections.scores.dtype == torch.float32


def _plain_attention(q, k, v, blocked):
    logits = q @ k.transpose(-2, -1) / q.size(-1)**0.5
    weights = logits.masked_fill(blocked, float('-inf')).softmax(-1)
    return (weights @ v).transpose(1, 2).flatten(2)


@pytest.mark.parametrize('value_dims', [16, 8])  # 8: padded value heads
def test_attention_kernel_under_bf16_is_the_plain_computation(value_dims):
    """PyTorch's fused kernel (value heads padded where narrower) against
    the plain computation, both under bf16 autocast."""
    generator = torch.Generator().manual_seed(4)
    q = torch.randn(2, 4, 7, 16, generator=generator)
    k = torch.randn(2, 4, 9, 16, generator=generator)
    v = torch.randn(2, 4, 9, value_dims, generator=generator)
    blocked = torch.zeros(2, 1, 1, 9, dtype=torch.bool)
    blocked[1, ..., 6:] = True
    with bf16_autocast, profile(activities=[ProfilerActivity.CPU]) as prof:
        fused = multi_head_attention(q, k, v, blocked, torch.nn.Dropout(0.))
    with bf16_autocast:
        plain = _plain_attention(q, k, v, blocked)
    assert any('scaled_dot_product' in event.name for event in prof.events())
    assert fused.dtype == plain.dtype == torch.bfloat16
    assert fused.shape == (2, 7, 4 * value_dims)
    # both round to bf16 (2**-8 relative) along different paths
    torch.testing.assert_close(
        fused.float(), plain.float(), rtol=2e-2, atol=2e-2)


def test_decoder_paths_agree_under_bf16():
    """Dropout on (eval mode keeps it off), padding: the fused decoder and
    the plain one that records the attention give the same output under
    bf16, within bf16's rounding."""
    model = build_model(1).eval()
    inputs, samples = parity_batch(model)
    outs = []
    for record in (False, True):
        for module in model.modules():
            if isinstance(module, ConditionalAttention):
                module.record_attention = record
        with torch.no_grad(), bf16_autocast:
            outs.append(
                model.forward_transformer(model.extract_feat(inputs),
                                          samples)['hidden_states'].float())
    assert (outs[0] - outs[1]).abs().max() < 0.1
    assert (outs[0] - outs[1]).abs().mean() < 0.01


def test_bf16_optim_wrapper_trains_under_autocast():
    model = without_dropout(build_model(1)).train()
    wrapper = OPTIM_WRAPPERS.build(
        dict(
            type='BF16OptimWrapper',
            optimizer=torch.optim.SGD(model.parameters(), lr=0.01)))
    assert type(wrapper) is BF16OptimWrapper
    assert isinstance(wrapper, OptimWrapper)
    dtypes = []
    model.backbone.conv1.register_forward_hook(
        lambda module, args, out: dtypes.append(out.dtype))
    before = model.query_embedding.weight.detach().clone()
    inputs, samples = batch_with_boxes(model)
    with wrapper.optim_context(model):
        losses = model.loss(inputs, samples)
    wrapper.update_params(sum(losses.values()))
    assert dtypes == [torch.bfloat16]
    assert model.query_embedding.weight.dtype == torch.float32
    assert not torch.equal(before, model.query_embedding.weight)


@pytest.mark.parametrize('capability, native', [('AVX512', True),
                                                ('AVX2', False)])
def test_amp_warns_once_where_the_cpu_emulates_bf16(monkeypatch, capability,
                                                    native):
    monkeypatch.setattr(autocast_warning, 'cpu_vector_capability',
                        lambda: capability)
    logged = []
    monkeypatch.setattr(autocast_warning, 'print_log',
                        lambda msg, **kwargs: logged.append((msg, kwargs)))
    # the check is the wrapper's, whatever the model (a real one trains
    # under it in test_bf16_optim_wrapper_trains_under_autocast)
    model = torch.nn.Linear(4, 2)
    wrapper = OPTIM_WRAPPERS.build(
        dict(
            type='BF16OptimWrapper',
            optimizer=torch.optim.SGD(model.parameters(), lr=0.01)))
    for _ in range(2):
        with wrapper.optim_context(model):
            loss = model(torch.ones(3, 4)).float().sum()
        wrapper.update_params(loss)
    assert autocast_warning.warn_if_autocast_is_slow('cuda') is False
    assert len(logged) == (0 if native else 1), logged
    if not native:
        message, kwargs = logged[0]
        assert '--amp' in message and 'emulated' in message
        assert kwargs['level'] == logging.WARNING


def test_train_and_test_with_amp_on_the_cpu(synthetic_root, tmp_path):
    # 8 images each way: bf16 is emulated (slow) on CPUs without AVX-512
    loader = tiny_loader('indices=8')
    config = write_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        train_dataloader=loader,
        test_dataloader=loader)
    work_dir = tmp_path / 'work'
    result = run_tool([
        'tools/train.py', config, '--amp', '--work-dir',
        str(work_dir), '--cfg-options', 'train_cfg.max_epochs=1'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    dumped = Config.fromfile(work_dir / 'cfg.py')
    assert dumped.optim_wrapper.type == 'mmdet_cdetr.BF16OptimWrapper'
    assert 'loss_scale' not in dumped.optim_wrapper
    result = run_tool([
        'tools/test.py', config,
        str(work_dir / 'epoch_1.pth'), '--amp', '--work-dir',
        str(tmp_path / 'test')
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'coco/bbox_mAP' in result.stdout
    assert Config.fromfile(tmp_path / 'test' / 'cfg.py').test_cfg.fp16
