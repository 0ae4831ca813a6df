from mmengine.hooks import Hook
from mmengine.runner import BaseLoop, Runner

from mmdet_cdetr.registry import HOOKS


@HOOKS.register_module()
class FineTuneHook(Hook):
    """Let a training run's ``load_from`` bring a checkpoint made for another
    number of classes: the head skips that classifier (one log line naming
    the keys and both shapes) and starts its own afresh; everything else
    loads.

    Only training from ``load_from`` is fine-tuning: the runner loads it
    between ``before_run`` and ``before_train``, so the head allows the
    mismatch exactly then. Testing and ``--resume`` still refuse it with
    the head's error, since there a mismatch is a mistake.
    """

    def before_run(self, runner: Runner) -> None:
        fine_tuning = isinstance(runner._train_loop,
                                 BaseLoop) and not runner._resume
        self._set(runner, fine_tuning)

    def before_train(self, runner: Runner) -> None:
        self._set(runner, False)

    @staticmethod
    def _set(runner: Runner, allowed: bool) -> None:
        for module in runner.model.modules():
            if hasattr(module, 'reset_mismatched_classifier'):
                module.reset_mismatched_classifier = allowed
