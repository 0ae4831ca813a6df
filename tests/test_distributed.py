"""Several processes (gloo on the CPU): the losses are normalised as the
official criterion does (by the box count averaged over processes), the
fine-tuning classifier is the same on every rank, and a 2-process run
resumed from a checkpoint reports and saves what the uninterrupted run
does."""
import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import (build_model, build_quick_model, parity_batch, run_tool,
                      run_tool_distributed, without_dropout, write_config)
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment

from mmdet_cdetr.cli import finish_distributed
from mmdet_cdetr.utils.torch_compat import load_weights_only

BOXES_PER_RANK = (1, 7)
WORLD_SIZE = len(BOXES_PER_RANK)


def run_ranks(worker, tmp_path: Path, *args) -> list:
    """Run ``worker(rank, tmp_path, *args)`` in WORLD_SIZE processes joined
    by a gloo group; each saves its results to ``rank{N}.pt``. The processes
    come from the fork server of :mod:`forked_tools`, which has imported the
    libraries already (a spawned one would spend ~12 s importing them)."""
    mp.start_processes(
        _join_group,
        args=(worker, str(tmp_path), args),
        nprocs=WORLD_SIZE,
        join=True,
        start_method='forkserver')
    return [
        torch.load(tmp_path / f'rank{rank}.pt', weights_only=False)
        for rank in range(WORLD_SIZE)
    ]


def _join_group(rank: int, worker, tmp: str, args: tuple) -> None:
    dist.init_process_group(
        'gloo',
        init_method=f'file://{tmp}/rendezvous',
        rank=rank,
        world_size=WORLD_SIZE)
    torch.set_num_threads(1)  # two processes share the two cores
    init_default_scope('mmdet_cdetr')
    try:
        torch.save(worker(rank, *args), Path(tmp) / f'rank{rank}.pt')
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _one_image(model, rank: int):
    """Image ``rank`` of the parity batch with BOXES_PER_RANK[rank] random
    ground-truth boxes."""
    inputs, samples = parity_batch(model)
    sample = samples[rank]
    h, w = sample.img_shape
    gen = torch.Generator().manual_seed(rank)
    num = BOXES_PER_RANK[rank]
    corners = torch.rand(num, 2, 2, generator=gen) * torch.tensor([w, h])
    sample.gt_instances = InstanceData(
        bboxes=torch.cat(
            [corners.amin(1), corners.amax(1) + 8], 1),
        labels=torch.randint(3, (num, ), generator=gen))
    return inputs[rank:rank + 1], [sample]


def _pairwise_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of every (x1, y1, x2, y2) box of ``a`` with every one of ``b``."""
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    inter = (torch.min(a[:, None, 2:], b[None, :, 2:]) -
             torch.max(a[:, None, :2], b[None, :, :2])).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    hull = (torch.max(a[:, None, 2:], b[None, :, 2:]) -
            torch.min(a[:, None, :2], b[None, :, :2])).prod(-1)
    return inter / union - (hull - union) / hull


def _xyxy(cxcywh: torch.Tensor) -> torch.Tensor:
    return torch.cat(
        [cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2],
        1)


def official_losses(logits: torch.Tensor, boxes: torch.Tensor, sample,
                    num_groups: int, num_boxes: float) -> dict:
    """The official criterion of one image, written out: per decoder layer
    and query group, Hungarian matching on the focal class cost (2), the L1
    cost of normalised (cx, cy, w, h) (5) and -GIoU (2); then the sigmoid
    focal loss summed over queries and classes, L1 and 1 - GIoU summed over
    the matches, each divided by ``num_boxes`` and weighted 2 / 5 / 2.

    Args:
        logits: (num_layers, num_queries, num_classes).
        boxes: (num_layers, num_queries, 4), normalised (cx, cy, w, h).
    """
    h, w = sample.img_shape
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    gt_xyxy = sample.gt_instances.bboxes / scale
    gt_cxcywh = torch.cat([(gt_xyxy[:, :2] + gt_xyxy[:, 2:]) / 2,
                           gt_xyxy[:, 2:] - gt_xyxy[:, :2]], 1)
    labels = sample.gt_instances.labels
    losses = {}
    for layer, (layer_logits, layer_boxes) in enumerate(zip(logits, boxes)):
        prob = layer_logits.sigmoid()
        neg = 0.75 * prob**2 * -(1 - prob + 1e-8).log()
        pos = 0.25 * (1 - prob)**2 * -(prob + 1e-8).log()
        cost = (2 * (pos[:, labels] - neg[:, labels]) +
                5 * torch.cdist(layer_boxes, gt_cxcywh, p=1) -
                2 * _pairwise_giou(_xyxy(layer_boxes), gt_xyxy))
        group_size = len(layer_boxes) // num_groups
        rows, cols = [], []
        for group, group_cost in enumerate(cost.detach().split(group_size)):
            group_rows, group_cols = linear_sum_assignment(group_cost)
            rows += (group_rows + group * group_size).tolist()
            cols += group_cols.tolist()
        target = torch.zeros_like(layer_logits)
        target[rows, labels[cols]] = 1
        p_t = prob * target + (1 - prob) * (1 - target)
        focal = (
            F.binary_cross_entropy_with_logits(
                layer_logits, target, reduction='none') * (1 - p_t)**2 *
            (0.25 * target + 0.75 * (1 - target)))
        matched = layer_boxes[rows]
        giou = _pairwise_giou(_xyxy(matched), gt_xyxy[cols]).diagonal()
        prefix = '' if layer == len(logits) - 1 else f'd{layer}.'
        losses[prefix + 'loss_cls'] = 2 * focal.sum() / num_boxes
        losses[prefix +
               'loss_bbox'] = (5 * (matched - gt_cxcywh[cols]).abs().sum() /
                               num_boxes)
        losses[prefix + 'loss_iou'] = 2 * (1 - giou).sum() / num_boxes
    return losses


def _losses_worker(rank: int) -> dict:
    """Our losses and the official formula's on this rank's image, for the
    plain model and for Group DETR with 3 groups."""
    results = {}
    for num_groups in (1, 3):
        model = without_dropout(build_model(num_groups)).train()
        inputs, samples = _one_image(model, rank)
        ours = model.loss(inputs, samples)
        with torch.no_grad():
            logits, boxes = model.bbox_head(**model.forward_transformer(
                model.extract_feat(inputs), samples))
        # the official normaliser: all ranks' boxes (times the groups)
        # over the number of ranks
        num_boxes = sum(BOXES_PER_RANK) * num_groups / WORLD_SIZE
        official = official_losses(logits[:, 0], boxes[:, 0], samples[0],
                                   num_groups, num_boxes)
        results[num_groups] = {
            key: (ours[key].item(), official[key].item())
            for key in official
        }
    return results


def test_losses_use_the_box_count_of_all_processes(tmp_path):
    """1 box on rank 0 and 7 on rank 1: every loss term of every layer
    equals the official criterion's with the global mean of 4 boxes, plain
    and with 3 query groups (dividing by each rank's own count would make
    rank 0's terms 4x and rank 1's 0.57x)."""
    for rank, results in enumerate(run_ranks(_losses_worker, tmp_path)):
        for num_groups, terms in results.items():
            assert len(terms) == 9  # 3 decoder layers x 3 losses
            for key, (ours, official) in terms.items():
                assert abs(ours -
                           official) <= 1e-5 * abs(official), (rank,
                                                               num_groups, key,
                                                               ours, official)


def _fine_tune_worker(rank: int) -> dict:
    """Ranks seeded differently (``diff_rank_seed``) load a checkpoint with
    a 2-class classifier into the 3-class model, fine-tuning."""
    torch.manual_seed(rank)
    model = build_quick_model()
    state = model.state_dict()
    state['bbox_head.fc_cls.weight'] = state['bbox_head.fc_cls.weight'][:2]
    state['bbox_head.fc_cls.bias'] = state['bbox_head.fc_cls.bias'][:2]
    model.bbox_head.reset_mismatched_classifier = True
    model.load_state_dict(state, strict=False)  # as load_checkpoint
    return dict(
        weight=model.bbox_head.fc_cls.weight.detach(), next_draw=torch.rand(4))


def test_fine_tuning_classifier_is_the_same_on_every_rank(tmp_path):
    first, second = run_ranks(_fine_tune_worker, tmp_path)
    # the ranks' random states differ, so their own draws would too
    assert not torch.equal(first['next_draw'], second['next_draw'])
    assert torch.equal(first['weight'], second['weight'])
    assert first['weight'].shape[0] == 3


def _finish_worker(rank: int) -> dict:
    # A run's last collective, as MMEngine's evaluator ends with.
    metrics = [{'coco/bbox_mAP': 0.5} if rank == 0 else None]
    dist.broadcast_object_list(metrics)
    finish_distributed()
    return dict(metrics=metrics[0], initialized=dist.is_initialized())


def test_finishing_a_run_waits_and_destroys_the_group(tmp_path):
    for result in run_ranks(_finish_worker, tmp_path):
        assert result == dict(
            metrics={'coco/bbox_mAP': 0.5}, initialized=False)


def _val_metrics(work_dir: Path) -> list:
    """The box AP lines the run logged after each validation."""
    log = ''.join(p.read_text() for p in sorted(work_dir.glob('*/*.log')))
    return re.findall(
        r'Epoch\(val\) \[(\d+)\].*?(coco/bbox_mAP: .*?)  data_time', log)


def test_two_process_resume_repeats_weights_and_metrics(
        synthetic_root, tmp_path):
    """2 processes, batch norms trained, a persistent worker each: resumed
    from epoch 1, the run ends on the uninterrupted run's weights and
    reports its validation metrics, and tools/test.py on the last
    checkpoint reports them too (every rank evaluates the saved model)."""
    config = write_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        train_dataloader='dict(batch_size=4, num_workers=1, '
        'persistent_workers=True, dataset=dict(data_root=data_root))',
        train_cfg='dict(max_epochs=2, val_interval=1)',
        randomness='dict(seed=0, diff_rank_seed=True)',
    )

    def train(work_dir: Path, port: int, *extra: str):
        result = run_tool_distributed(
            ['tools/train.py', config, '--work-dir',
             str(work_dir), *extra], 2, port)
        assert result.returncode == 0, result.stderr[-3000:]

    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    train(whole, 29531)
    resumed.mkdir()
    shutil.copy(whole / 'epoch_1.pth', resumed / 'epoch_1.pth')
    train(resumed, 29532, '--resume', str(resumed / 'epoch_1.pth'))

    final = [load_weights_only(d / 'epoch_2.pth') for d in (whole, resumed)]
    for key, value in final[0]['state_dict'].items():
        assert torch.equal(value, final[1]['state_dict'][key]), key
    assert any('running_mean' in key for key in final[0]['state_dict'])
    metrics = _val_metrics(whole)
    assert [epoch for epoch, _ in metrics] == ['1', '2']
    assert _val_metrics(resumed) == metrics[1:]
    result = run_tool([
        'tools/test.py', config,
        str(whole / 'epoch_2.pth'), '--work-dir',
        str(tmp_path / 'test')
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    tested = re.search(r'Epoch\(test\).*?(coco/bbox_mAP: .*?)  data_time',
                       result.stdout)
    assert tested and tested.group(1) == metrics[1][1]
