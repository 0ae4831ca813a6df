import pytest
import torch
from conftest import R50_CONFIG, REPO, build_quick_model
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

from mmdet_cdetr.models import (ConditionalDETR, ConditionalDETRHead,
                                ConditionalDetrTransformerDecoder)
from mmdet_cdetr.registry import MODELS


def _num_params(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def test_r50_config_builds_ours_with_paper_size():
    cfg = Config.fromfile(R50_CONFIG)
    model = MODELS.build(cfg.model)
    assert type(model) is ConditionalDETR
    assert type(model.bbox_head) is ConditionalDETRHead
    assert type(model.decoder) is ConditionalDetrTransformerDecoder
    assert model.num_queries == 300
    assert 43.4 <= _num_params(model) <= 43.6
    # mmdet's built-in from the same config has the same parameters.
    cfg.model.type = 'mmdet.ConditionalDETR'
    cfg.model.bbox_head.type = 'mmdet.ConditionalDETRHead'
    builtin = MODELS.build(cfg.model)
    assert type(builtin) is not ConditionalDETR
    assert type(builtin.bbox_head) is not ConditionalDETRHead
    assert _num_params(builtin) == pytest.approx(_num_params(model))


def _samples(shapes, batch_shape):
    samples = []
    for h, w in shapes:
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(h, w),
                batch_input_shape=batch_shape,
                scale_factor=(1., 1.),
                ori_shape=(h, w)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[4., 6., 30., 28.]]),
            labels=torch.tensor([2]))
        samples.append(sample)
    return samples


def test_padding_masks_make_batched_equal_to_alone():
    """An image padded in a batch with a larger one decodes as if alone:
    the encoder, the positional encodings and the cross-attention honour
    the padding mask."""
    model = build_quick_model().eval()
    stride, dim = 8, 128
    alone = torch.randn(1, dim, 4, 6)
    batch = torch.randn(2, dim, 8, 8) * 3
    batch[0, :, :4, :6] = alone[0]
    with torch.no_grad():
        out_alone = model.forward_transformer(
            (alone, ),
            _samples([(4 * stride, 6 * stride)], (4 * stride, 6 * stride)))
        out_batch = model.forward_transformer(
            (batch, ),
            _samples([(4 * stride, 6 * stride), (8 * stride, 8 * stride)],
                     (8 * stride, 8 * stride)))
    torch.testing.assert_close(
        out_batch['hidden_states'][:, :1],
        out_alone['hidden_states'],
        atol=1e-5,
        rtol=1e-5)
    torch.testing.assert_close(out_batch['references'][:1],
                               out_alone['references'])


def test_different_sizes_and_empty_images_train_and_predict():
    model = build_quick_model()
    inputs = torch.zeros(2, 3, 128, 128)
    inputs[0, :, :96, :112] = torch.randn(3, 96, 112)
    inputs[1] = torch.randn(3, 128, 128)
    samples = _samples([(96, 112), (128, 128)], (128, 128))
    samples[1].gt_instances = InstanceData(
        bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    losses = model.loss(inputs, samples)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        results = model.predict(inputs, samples)
    assert [len(r.pred_instances.scores) for r in results] == [60, 60]
    assert (results[0].pred_instances.bboxes[:, 2] <= 112).all()


def test_gradients_reach_every_trainable_parameter():
    model = build_quick_model()
    # Zero-initialised layers (the box MLP's last layer, the residual
    # blocks' last BN) block gradients at step 0 only: open them.
    torch.nn.init.normal_(model.bbox_head.fc_reg.weight, std=0.01)
    for name, module in model.backbone.named_modules():
        if name.endswith('.bn2'):
            torch.nn.init.ones_(module.weight)
    inputs = torch.randn(2, 3, 64, 64)
    samples = _samples([(64, 64), (64, 64)], (64, 64))
    losses = model.loss(inputs, samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    no_grad = {
        name
        for name, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
    }
    # Content queries start at zero, so the first self-attention's content
    # weights only ever see zeros (as in the paper's model); biases train.
    assert no_grad == {
        f'decoder.layers.0.self_attn.{proj}.weight'
        for proj in ('qcontent_proj', 'kcontent_proj', 'v_proj')
    }


@pytest.mark.parametrize('name, detector', [
    ('detr_r50_8x2_150e_coco', 'DETR'),
    ('deformable_detr_r50_16x2_50e_coco', 'DeformableDETR'),
    ('dab_detr_r50_8x2_50e_coco', 'DABDETR'),
    ('mmdet_zoo_conditional_detr_r50_8x2_50e_coco', 'ConditionalDETR'),
])
def test_comparison_configs_build_mmdets_models(name, detector):
    cfg = Config.fromfile(str(REPO / f'configs/comparison/{name}.py'))
    assert cfg.default_scope == 'mmdet_cdetr'
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == detector
    assert type(model).__module__.startswith('mmdet.models')
