from typing import Optional

import numpy as np
import torch
from mmdet.models.task_modules import AssignResult
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment

from mmdet_cdetr.registry import TASK_UTILS
from .hungarian_assigner import HungarianAssigner


@TASK_UTILS.register_module()
class GroupHungarianAssigner(HungarianAssigner):
    """One-to-one Hungarian matching within each group of queries (Group
    DETR's group-wise one-to-many assignment).

    The ``K * N`` predictions of an image are K groups of N queries, group
    ``g`` in rows ``g * N ... (g + 1) * N - 1``; K is
    ``img_meta['num_query_groups']`` (1 if absent), which
    :class:`~mmdet_cdetr.models.ConditionalDETR` sets for the batch. Every
    ground-truth box is matched to exactly one query of every group, so it
    has K positives, and the losses, averaged over the positives as mmdet's
    DETR heads do, are the mean of the groups' plain losses.

    The match costs (``match_costs``, as :class:`HungarianAssigner`) are
    computed once for all groups; only the Hungarian algorithm runs per group,
    on its own ``(N, num_gts)`` slice. With K = 1 this is
    :class:`HungarianAssigner` (ours: non-finite costs are made finite).
    """

    def assign(self,
               pred_instances: InstanceData,
               gt_instances: InstanceData,
               img_meta: Optional[dict] = None,
               **kwargs) -> AssignResult:
        num_groups = (img_meta or {}).get('num_query_groups', 1)
        num_gts, num_preds = len(gt_instances), len(pred_instances)
        if num_preds % num_groups:
            raise ValueError(f'{num_preds} predictions do not split into '
                             f'num_query_groups={num_groups} groups.')
        gt_labels = gt_instances.labels
        device = gt_labels.device
        assigned_gt_inds = torch.zeros(
            num_preds, dtype=torch.long, device=device)
        assigned_labels = torch.full((num_preds, ),
                                     -1,
                                     dtype=torch.long,
                                     device=device)
        if num_gts and num_preds:
            cost = torch.stack([
                match_cost(
                    pred_instances=pred_instances,
                    gt_instances=gt_instances,
                    img_meta=img_meta) for match_cost in self.match_costs
            ]).sum(0)
            group_costs = cost.detach().cpu().view(num_groups, -1, num_gts)
            group_size = group_costs.size(1)
            rows, cols = [], []
            for group, group_cost in enumerate(group_costs.numpy()):
                group_rows, group_cols = linear_sum_assignment(group_cost)
                rows.append(group_rows + group * group_size)
                cols.append(group_cols)
            rows = torch.from_numpy(np.concatenate(rows)).to(device)
            cols = torch.from_numpy(np.concatenate(cols)).to(device)
            assigned_gt_inds[rows] = cols + 1
            assigned_labels[rows] = gt_labels[cols]
        return AssignResult(
            num_gts=num_gts,
            gt_inds=assigned_gt_inds,
            max_overlaps=None,
            labels=assigned_labels)
