from typing import Sequence

from mmengine.optim.scheduler import MultiStepLR
from mmengine.optim.scheduler.param_scheduler import INF

from mmdet_cdetr.registry import PARAM_SCHEDULERS
from mmdet_cdetr.utils.errors import ConfigError


@PARAM_SCHEDULERS.register_module()
class FractionalMultiStepLR(MultiStepLR):
    """``MultiStepLR`` with milestones given as fractions of the schedule.

    Leave ``end`` out of the config: the runner then sets it to
    ``train_cfg.max_epochs``, so ``--cfg-options train_cfg.max_epochs=N``
    moves the learning-rate drops with the schedule's length instead of
    leaving them at epochs written for another length.

    Args:
        optimizer: The optimizer (wrapper).
        milestone_fractions: Where the drops happen, as fractions of
            ``end - begin`` (e.g. ``[0.8]``), rounded to whole steps.
        gamma: Factor applied at each milestone.
        begin: Step at which the schedule starts.
        end: Step at which it ends (the runner's ``max_epochs`` default).
        **kwargs: ``MultiStepLR``'s other arguments.
    """

    def __init__(self,
                 optimizer,
                 milestone_fractions: Sequence[float],
                 gamma: float = 0.1,
                 begin: int = 0,
                 end: int = INF,
                 **kwargs) -> None:
        if end == INF:
            raise ConfigError(
                'FractionalMultiStepLR needs an end: leave `end` '
                'unset in a config run with a train loop (the '
                'runner fills in max_epochs) or give it')
        if not all(0 < f < 1 for f in milestone_fractions):
            raise ConfigError(
                'FractionalMultiStepLR milestone_fractions must '
                f'lie in (0, 1), got {list(milestone_fractions)}')
        milestones = [
            begin + max(1, round(f * (end - begin)))
            for f in milestone_fractions
        ]
        super().__init__(
            optimizer,
            milestones=milestones,
            gamma=gamma,
            begin=begin,
            end=end,
            **kwargs)
