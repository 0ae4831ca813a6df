"""Group DETR on Conditional DETR: group isolation in self-attention,
matching within groups, the loss as the mean of the groups' plain losses,
inference from group 0 only, K=1 as the plain model, configs and the
converter for checkpoints of the official ``GroupDETR`` branch."""
import argparse
import copy
import functools
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import (REPO, assert_matches_hf, assert_same_detections,
                      batch_with_boxes, build_model, detections,
                      load_converted, run_tool, without_dropout,
                      write_tiny_coco_config)
from mmengine.config import Config
from mmengine.structures import InstanceData

from mmdet_cdetr.converters import COCO_CATEGORY_IDS
from mmdet_cdetr.models import ConditionalDETR, GroupHungarianAssigner
from mmdet_cdetr.registry import MODELS, TASK_UTILS
from mmdet_cdetr.utils.torch_compat import load_weights_only

GROUP_CONFIGS = sorted((REPO / 'configs/group_detr').glob('*.py'))
STUDY_GROUP_CONFIG = str(
    REPO / 'configs/convergence/group_conditional_detr_r18_scratch.py')
MATCH_COSTS = [
    dict(type='FocalLossCost', weight=2.0),
    dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
    dict(type='IoUCost', iou_mode='giou', weight=2.0)
]


def plain_copy(model: ConditionalDETR, group: int) -> ConditionalDETR:
    """The plain model (K=1, mmdet's HungarianAssigner) with ``model``'s
    weights and mode, and the query embeddings of ``group``."""
    plain = build_model(1, group_assigner=False)
    state = model.state_dict()
    rows = slice(group * model.num_queries, (group + 1) * model.num_queries)
    state['query_embedding.weight'] = state['query_embedding.weight'][rows]
    plain.load_state_dict(state)
    return plain.train(model.training)


def decoder_outputs(model, inputs, samples):
    with torch.no_grad():
        return model.forward_transformer(model.extract_feat(inputs),
                                         samples)['hidden_states']


def test_groups_do_not_see_each_other():
    """Training mode, dropout off: changing group 2's query embeddings
    leaves the decoder outputs of groups 0 and 1 unchanged, and changes
    them once the groups are merged (a single group of 60 queries)."""
    model = without_dropout(build_model(3)).train()
    inputs, samples = batch_with_boxes(model)
    before = decoder_outputs(model, inputs, samples)
    assert before.shape[2] == 60
    with torch.no_grad():
        model.query_embedding.weight[40:] += torch.randn(20, 128)
    after = decoder_outputs(model, inputs, samples)
    assert not torch.allclose(after[:, :, 40:], before[:, :, 40:])
    torch.testing.assert_close(
        after[:, :, :40], before[:, :, :40], rtol=1e-6, atol=1e-6)
    # control: the same queries in one group do see group 2's change
    model.num_query_groups = 1
    model.num_queries = 60
    merged_before = decoder_outputs(model, inputs, samples)
    with torch.no_grad():
        model.query_embedding.weight[40:] += torch.randn(20, 128)
    merged_after = decoder_outputs(model, inputs, samples)
    assert (merged_after[:, :, :40] -
            merged_before[:, :, :40]).abs().max() > 1e-3


def test_eval_decodes_group0_like_the_plain_model():
    """K=11 in eval mode: the plain model with group 0's embeddings, same
    decoder outputs and detections."""
    model = build_model(11).eval()
    plain = plain_copy(model, 0).eval()
    inputs, samples = batch_with_boxes(model)
    ours = decoder_outputs(model, inputs, samples)
    assert ours.shape[2] == model.num_queries
    torch.testing.assert_close(
        ours, decoder_outputs(plain, inputs, samples), rtol=0, atol=0)
    assert_same_detections(
        detections(model, inputs, samples), detections(plain, inputs, samples))


def _loss_and_grads(model, inputs, samples, seed=0):
    model.zero_grad()
    torch.manual_seed(seed)
    losses = model.loss(inputs, copy.deepcopy(samples))
    sum(losses.values()).backward()
    grads = {
        name: p.grad.clone()
        for name, p in model.named_parameters() if p.grad is not None
    }
    return {k: v.detach() for k, v in losses.items()}, grads


def test_one_group_is_the_plain_model_in_training():
    """K=1 with the group assigner computes exactly the plain model's
    losses and gradients (dropout on, same seed)."""
    model = build_model(1).train()
    plain = plain_copy(model, 0)
    assert type(plain.bbox_head.assigner).__name__ == 'HungarianAssigner'
    inputs, samples = batch_with_boxes(model)
    losses, grads = _loss_and_grads(model, inputs, samples)
    plain_losses, plain_grads = _loss_and_grads(plain, inputs, samples)
    assert losses.keys() == plain_losses.keys() and len(losses) == 9
    for key in losses:
        torch.testing.assert_close(
            losses[key], plain_losses[key], rtol=0, atol=0)
    assert grads.keys() == plain_grads.keys()
    for name in grads:
        torch.testing.assert_close(
            grads[name], plain_grads[name], rtol=0, atol=0)


def test_loss_is_the_mean_of_the_groups_plain_losses():
    """Each loss of a K=3 model equals the mean over groups of the plain
    model's loss with that group's query embeddings (the official branch
    normalises by K x the number of boxes)."""
    model = without_dropout(build_model(3)).train()
    inputs, samples = batch_with_boxes(model)
    losses, _ = _loss_and_grads(model, inputs, samples)
    per_group = [
        _loss_and_grads(
            without_dropout(plain_copy(model, g)), inputs, samples)[0]
        for g in range(3)
    ]
    for key, value in losses.items():
        mean = sum(group[key] for group in per_group) / 3
        torch.testing.assert_close(value, mean, rtol=1e-5, atol=1e-6)
    # the groups differ, so the mean is not one group's loss
    assert (per_group[0]['loss_cls'] - per_group[1]['loss_cls']).abs() > 1e-4


def test_matching_within_groups():
    """Each box is matched once in every group, no query twice, and each
    group's matching is mmdet's Hungarian matching of that group alone."""
    num_groups, group_size, num_gts = 4, 6, 3
    rng = torch.Generator().manual_seed(0)
    xy = torch.rand(num_groups * group_size, 2, generator=rng) * 60
    wh = torch.rand(num_groups * group_size, 2, generator=rng) * 40 + 4
    preds = InstanceData(
        scores=torch.randn(num_groups * group_size, 3, generator=rng),
        bboxes=torch.cat([xy, xy + wh], 1))
    gts = InstanceData(
        bboxes=torch.tensor([[0., 0., 30., 30.], [20., 10., 60., 50.],
                             [40., 40., 90., 100.]]),
        labels=torch.tensor([2, 0, 2]))
    img_meta = dict(img_shape=(100, 120), num_query_groups=num_groups)
    assigner = TASK_UTILS.build(
        dict(type='GroupHungarianAssigner', match_costs=MATCH_COSTS))
    assert isinstance(assigner, GroupHungarianAssigner)
    result = assigner.assign(preds, gts, img_meta)
    plain = TASK_UTILS.build(
        dict(type='HungarianAssigner', match_costs=MATCH_COSTS))
    for group, gt_inds in enumerate(result.gt_inds.view(num_groups, -1)):
        matched = gt_inds[gt_inds > 0]
        assert sorted(matched.tolist()) == list(range(1, num_gts + 1))
        alone = plain.assign(
            preds[group * group_size:(group + 1) * group_size], gts, img_meta)
        assert torch.equal(gt_inds, alone.gt_inds)
    pos = result.gt_inds > 0
    assert torch.equal(result.labels[pos], gts.labels[result.gt_inds[pos] - 1])
    assert (result.labels[~pos] == -1).all()
    # no ground truth: every query is background
    empty = assigner.assign(preds, gts[:0], img_meta)
    assert (empty.gt_inds == 0).all()


def test_groups_need_the_group_assigner():
    with pytest.raises(ValueError, match='GroupHungarianAssigner'):
        build_model(2, group_assigner=False)


@pytest.mark.parametrize('config', GROUP_CONFIGS, ids=lambda p: p.stem)
def test_group_configs_build(config):
    cfg = Config.fromfile(str(config))
    model = MODELS.build(cfg.model)
    assert model.num_query_groups == 11 and model.num_queries == 300
    assert model.query_embedding.weight.shape == (3300, 256)
    assert isinstance(model.bbox_head.assigner, GroupHungarianAssigner)
    if '12e' in config.stem:
        assert cfg.train_cfg.max_epochs == 12
        assert cfg.param_scheduler[0].milestones == [11]


def test_group_config_trains_and_evaluates(tmp_path, synthetic_root):
    """tools/train.py runs a group config (the study's, shrunk) through a
    training epoch and a COCO evaluation of group 0."""
    config = tmp_path / 'group.py'
    config.write_text(f"""_base_ = '{STUDY_GROUP_CONFIG}'
data_root = '{synthetic_root}/'
loader = dict(batch_size=4, num_workers=0, persistent_workers=False,
              dataset=dict(data_root=data_root, indices=8))
train_dataloader = loader
val_dataloader = loader
test_dataloader = loader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
model = dict(num_query_groups=3)
""")
    result = run_tool(
        ['tools/train.py',
         str(config), '--work-dir',
         str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'coco/bbox_mAP' in result.stdout + result.stderr
    ckpt = load_weights_only(tmp_path / 'epoch_1.pth')
    assert ckpt['state_dict']['query_embedding.weight'].shape == (60, 256)


def test_group_assigner_spreads_each_box_over_the_groups():
    """The model's positives: K per box at every decoder layer."""
    model = without_dropout(build_model(3)).train()
    inputs, samples = batch_with_boxes(model)
    seen = []
    assign = model.bbox_head.assigner.assign

    def spy(pred_instances, gt_instances, img_meta=None, **kwargs):
        result = assign(pred_instances, gt_instances, img_meta, **kwargs)
        seen.append((len(pred_instances), len(gt_instances),
                     int((result.gt_inds > 0).sum())))
        return result

    model.bbox_head.assigner.assign = spy
    model.loss(inputs, samples)
    # 3 decoder layers x 2 images, 3 positives per box
    assert sorted(seen) == sorted([(60, 3, 9), (60, 2, 6)] * 3)


@pytest.fixture(scope='module')
def group_checkpoint(hf_reference, tmp_path_factory):
    """A GroupDETR-branch checkpoint (official layout, 3 query groups):
    the HuggingFace reference's weights, its query embeddings as group 0
    and two more random groups."""
    from safetensors.torch import load_file
    from test_parity_official import official_state
    tmp = tmp_path_factory.mktemp('groupdetr')
    state = official_state(
        load_file(str(hf_reference.dir / 'model.safetensors')))
    group0 = state['query_embed.weight']
    state['query_embed.weight'] = torch.cat(
        [group0, torch.randn(2 * len(group0), group0.size(1))])
    src = tmp / 'conddetr_r50_epoch12_groupdetr3.pth'
    torch.save(dict(model=state, args=argparse.Namespace(group_detr=3)), src)
    group_config = write_tiny_coco_config(
        tmp / 'tiny_group.py', """
model.update(num_query_groups=3,
             train_cfg=dict(assigner=dict(type='GroupHungarianAssigner')))
""")
    return SimpleNamespace(
        src=src,
        tmp=tmp,
        queries=state['query_embed.weight'],
        group_config=group_config)


def _convert(checkpoint, config: str, out: Path):
    result = run_tool([
        'tools/model_converters/official2mmdet.py',
        str(checkpoint.src),
        str(out), '--config', config
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'unfilled model keys: 0' in result.stdout
    assert 'unused source keys: 0' in result.stdout
    return result.stdout


@pytest.fixture(scope='module')
def converted_group(group_checkpoint):
    out = group_checkpoint.tmp / 'group.pth'
    return out, _convert(group_checkpoint, group_checkpoint.group_config, out)


def test_groupdetr_checkpoint_into_group_config(group_checkpoint,
                                                converted_group, hf_reference):
    """All groups kept; in eval mode the model is the official one
    (checked against the HuggingFace reference of the same weights)."""
    out, log = converted_group
    assert 'all 3 query groups kept' in log
    state = load_weights_only(out)['state_dict']
    assert torch.equal(state['query_embedding.weight'],
                       group_checkpoint.queries)
    model = load_converted(group_checkpoint.group_config, out)
    assert model.num_query_groups == 3
    assert_matches_hf(model, hf_reference.model)


def test_groupdetr_checkpoint_into_plain_config(group_checkpoint,
                                                tiny_coco_config,
                                                hf_reference):
    """Only group 0 kept, with one line saying so."""
    out = group_checkpoint.tmp / 'plain.pth'
    log = _convert(group_checkpoint, tiny_coco_config, out)
    notes = [line for line in log.splitlines() if 'group 0' in line]
    assert notes == [
        "query embedding: kept group 0 of the checkpoint's 3 query groups "
        '(30 of 90 rows), as the config is not a group config '
        '(num_query_groups=1)'
    ]
    state = load_weights_only(out)['state_dict']
    assert torch.equal(state['query_embedding.weight'],
                       group_checkpoint.queries[:30])
    assert_matches_hf(
        load_converted(tiny_coco_config, out), hf_reference.model)


def official_group_training(hf_reference, queries: torch.Tensor,
                            num_groups: int):
    """The official GroupDETR computation written with HuggingFace's
    modules (which the official-layout parity tests tie to the official
    model): its Conditional DETR with all ``queries``, self-attention
    blocked between groups, and per group the official matcher and losses
    (HuggingFace's Deformable-DETR criterion: focal class cost, sigmoid
    focal loss times the number of queries over the number of boxes),
    averaged over groups, with the official weights 2 / 5 / 2. Last decoder
    layer only: HuggingFace feeds layer-normed states to the next layer
    when it computes auxiliary outputs, the official code does not."""
    import transformers
    from transformers.loss.loss_deformable_detr import (
        DeformableDetrHungarianMatcher, DeformableDetrImageLoss)
    config = copy.deepcopy(hf_reference.model.config)
    config.update(
        dict(
            num_queries=len(queries),
            dropout=0.,
            attention_dropout=0.,
            activation_dropout=0.))
    model = transformers.ConditionalDetrForObjectDetection(config)
    state = hf_reference.model.state_dict()
    state['model.query_position_embeddings.weight'] = queries
    model.load_state_dict(state)
    size = len(queries) // num_groups
    groups = torch.arange(len(queries)) // size
    blocked = torch.zeros(len(queries), len(queries)).masked_fill_(
        groups[:, None] != groups[None], float('-inf'))[None, None]

    def within_groups(attend, *args, **kwargs):
        # one mask row per image: transformers 4 checks the batch size
        states = kwargs.get('hidden_states', args[0] if args else None)
        mask = blocked.expand(len(states), -1, -1, -1)
        return attend(*args, **dict(kwargs, attention_mask=mask))

    for layer in model.model.decoder.layers:
        layer.self_attn.forward = functools.partial(within_groups,
                                                    layer.self_attn.forward)
    criterion = DeformableDetrImageLoss(
        matcher=DeformableDetrHungarianMatcher(
            class_cost=2, bbox_cost=5, giou_cost=2),
        num_classes=len(COCO_CATEGORY_IDS),
        focal_alpha=0.25,
        losses=['labels', 'boxes'])

    def losses(inputs, samples) -> dict:
        mask = torch.zeros(
            inputs.shape[0], *inputs.shape[-2:], dtype=torch.long)
        labels = []
        for i, sample in enumerate(samples):
            h, w = sample.img_shape
            mask[i, :h, :w] = 1
            x1, y1, x2, y2 = sample.gt_instances.bboxes.unbind(1)
            boxes = torch.stack([(x1 + x2) / 2,
                                 (y1 + y2) / 2, x2 - x1, y2 - y1],
                                1) / torch.tensor([w, h, w, h])
            labels.append(
                dict(class_labels=sample.gt_instances.labels, boxes=boxes))
        out = model(pixel_values=inputs, pixel_mask=mask)
        # the 80 COCO logits, as ours (the 11 'N/A' ones have no boxes)
        logits = out.logits[..., list(COCO_CATEGORY_IDS)]
        total = dict(loss_cls=0., loss_bbox=0., loss_iou=0.)
        for group in range(num_groups):
            rows = slice(group * size, (group + 1) * size)
            group_losses = criterion(
                dict(
                    logits=logits[:, rows],
                    pred_boxes=out.pred_boxes[:, rows]), labels)
            for key, name, weight in (('loss_cls', 'loss_ce',
                                       2), ('loss_bbox', 'loss_bbox', 5),
                                      ('loss_iou', 'loss_giou', 2)):
                total[key] += weight * group_losses[name] / num_groups
        return total

    return model.train(), losses


def test_training_matches_the_official_group_computation(
        group_checkpoint, converted_group, hf_reference):
    """Our K=3 model (converted from the GroupDETR-layout checkpoint) in
    training mode, dropout off: the last decoder layer's losses and the
    gradients they give equal the official group computation's on the same
    weights and batch."""
    from mmdet_cdetr.converters import convert_huggingface
    ours = without_dropout(
        load_converted(group_checkpoint.group_config,
                       converted_group[0])).train()
    reference, reference_losses = official_group_training(
        hf_reference, group_checkpoint.queries, num_groups=3)
    inputs, samples = batch_with_boxes(ours)
    losses = ours.loss(inputs, copy.deepcopy(samples))
    expected = reference_losses(inputs, samples)
    for key, value in expected.items():
        torch.testing.assert_close(losses[key], value, rtol=1e-5, atol=0)
    sum(losses[key] for key in expected).backward()
    sum(expected.values()).backward()
    grads = convert_huggingface(
        {
            name: p.grad
            for name, p in reference.named_parameters() if p.grad is not None
        }, reference.config.id2label).state_dict
    compared = 0
    for name, p in ours.named_parameters():
        if p.grad is None or name not in grads:
            continue  # HuggingFace freezes its backbone
        # float32 noise: up to 5e-4 of a tensor's largest gradient here
        # (the neck, under a loss of ~450), ~1e-6 where the exact gradient
        # is 0 (key biases, first-layer self-attention)
        scale = grads[name].abs().max()
        torch.testing.assert_close(
            p.grad, grads[name], rtol=0, atol=1e-3 * scale + 1e-5)
        compared += 1
    assert compared > 100
    assert ours.query_embedding.weight.grad[30:].abs().max() > 0
