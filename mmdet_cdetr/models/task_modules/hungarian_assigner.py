from typing import Any

import torch
from mmdet.models.task_modules import HungarianAssigner as MMDetAssigner
from torch import Tensor

from mmdet_cdetr.registry import TASK_UTILS

# What a cost that is not finite becomes: far above any real matching cost
# (focal, L1 and GIoU costs are of order 1-10), finite in float32 whatever
# the number of costs summed.
NON_FINITE_COST = 1e8


def finite_cost(cost: Tensor) -> Tensor:
    """``cost`` as float32 with NaN and infinities replaced by
    :data:`NON_FINITE_COST` (unchanged when all are finite). scipy's
    ``linear_sum_assignment`` refuses a matrix with any of them."""
    if bool(torch.isfinite(cost).all()):
        return cost
    return torch.nan_to_num(
        cost.float(),
        nan=NON_FINITE_COST,
        posinf=NON_FINITE_COST,
        neginf=NON_FINITE_COST)


class _FiniteMatchCost:
    """A match cost whose result :func:`finite_cost` makes finite."""

    def __init__(self, match_cost: Any) -> None:
        self.match_cost = match_cost

    def __call__(self, *args, **kwargs) -> Tensor:
        return finite_cost(self.match_cost(*args, **kwargs))

    def __repr__(self) -> str:
        return f'finite({self.match_cost!r})'


@TASK_UTILS.register_module()
class HungarianAssigner(MMDetAssigner):
    """mmdet's ``HungarianAssigner`` (same arguments) on finite costs.

    Predictions that are not finite (fp16 overflow, a diverging run) make
    matching costs NaN or infinite, and scipy's matcher then fails with
    "matrix contains invalid numeric entries", naming neither the step nor
    the loss. Here such costs are replaced by a large finite cost, so the
    step completes with a loss that is not finite: a loss scaler skips it,
    and without one :class:`~mmdet_cdetr.engine.hooks.FiniteLossHook`
    stops the run naming the iteration. Shadows mmdet's assigner in the
    ``mmdet_cdetr`` scope.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.match_costs = [
            _FiniteMatchCost(match_cost) for match_cost in self.match_costs
        ]
