from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from mmdet_cdetr.registry import HOOKS
from mmdet_cdetr.speedup import Enable, apply_wanted_speedups, speedups_wanted


@HOOKS.register_module()
class SpeedUpHook(Hook):
    """Apply :func:`mmdet_cdetr.speedup.apply_speedups` to the runner's
    model: the training ones before training (after the weights are loaded
    or resumed), and the inference ones before testing. Validation during
    training runs the training model as it is. A model that MMEngine already
    wrapped in DDP for training keeps its layout (DDP laid its gradient
    buckets out for it).

    Args:
        enable: ``'auto'`` (default): only for a model on the CPU, where the
            speed-ups were measured to pay; ``True``/``False`` force them.
    """

    priority = 'LOW'

    def __init__(self, enable: Enable = 'auto') -> None:
        speedups_wanted(enable, 'cpu')  # checks the value
        self.enable = enable

    def before_train(self, runner: Runner) -> None:
        apply_wanted_speedups(
            runner.model,
            self.enable,
            inference=False,
            channels_last=not is_model_wrapper(runner.model))

    def before_test(self, runner: Runner) -> None:
        apply_wanted_speedups(runner.model, self.enable, inference=True)
