import pytest
import torch
from conftest import build_quick_model
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData


def _sample(h=64, w=96, boxes=((8., 8., 40., 30.), ), labels=(1, )):
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(h, w),
            batch_input_shape=(h, w),
            scale_factor=(1., 1.),
            ori_shape=(h, w)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return sample


def _head_inputs(head, layers=3, bs=1, nq=20):
    hidden = torch.randn(layers, bs, nq, head.embed_dims)
    refs = torch.rand(bs, nq, 2) * 0.8 + 0.1
    return hidden, refs


def test_boxes_start_at_reference_points():
    head = build_quick_model().bbox_head
    hidden, refs = _head_inputs(head)
    logits, boxes = head(hidden, refs)
    assert logits.shape == (3, 1, 20, 3) and boxes.shape == (3, 1, 20, 4)
    # fc_reg starts at zero: centres are the references, sizes sigmoid(0).
    torch.testing.assert_close(boxes[..., :2], refs.expand(3, -1, -1, -1))
    torch.testing.assert_close(boxes[..., 2:],
                               torch.full_like(boxes[..., 2:], 0.5))
    # focal-loss prior 0.01 on the class bias
    torch.testing.assert_close(
        head.fc_cls.bias, torch.full((3, ), -torch.log(torch.tensor(99.))))


def test_box_offsets_add_to_reference_logits():
    head = build_quick_model().bbox_head
    torch.nn.init.normal_(head.fc_reg.weight)
    torch.nn.init.normal_(head.fc_reg.bias)
    hidden, refs = _head_inputs(head)
    _, boxes = head(hidden, refs)
    offsets = head.fc_reg(head.activate(head.reg_ffn(hidden)))
    want_xy = (offsets[..., :2] + torch.log(refs / (1 - refs))).sigmoid()
    torch.testing.assert_close(boxes[..., :2], want_xy)
    torch.testing.assert_close(boxes[..., 2:], offsets[..., 2:].sigmoid())


def test_predict_with_fewer_scores_than_max_per_img():
    # 20 queries x 3 classes = 60 < max_per_img = 100: mmdet's heads crash.
    head = build_quick_model().bbox_head
    assert head.test_cfg['max_per_img'] == 100
    hidden, refs = _head_inputs(head)
    (result, ) = head.predict(hidden, refs, [_sample()])
    assert len(result.scores) == 60
    assert (result.scores[:-1] >= result.scores[1:]).all()
    assert set(result.labels.tolist()) <= {0, 1, 2}
    assert (result.bboxes[:, 0::2] <= 96).all()
    assert (result.bboxes[:, 1::2] <= 64).all()


def test_loss_with_and_without_objects():
    head = build_quick_model().bbox_head
    hidden, refs = _head_inputs(head, bs=2)
    hidden.requires_grad_(True)
    empty = _sample(boxes=(), labels=())
    losses = head.loss(hidden, refs, [_sample(), empty])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(hidden.grad).all() and hidden.grad.abs().sum() > 0
    # an all-empty batch still gives finite losses (classification only)
    losses = head.loss(hidden, refs, [empty, empty])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_bbox'] == 0


def test_checkpoint_with_other_class_count_is_refused():
    model = build_quick_model()
    state = model.state_dict()
    state['bbox_head.fc_cls.weight'] = torch.zeros(80, 128)
    state['bbox_head.fc_cls.bias'] = torch.zeros(80)
    with pytest.raises(ValueError) as err:
        model.load_state_dict(state)
    message = str(err.value)
    assert 'bbox_head.fc_cls.weight' in message
    assert '(80, 128)' in message and '(3, 128)' in message
