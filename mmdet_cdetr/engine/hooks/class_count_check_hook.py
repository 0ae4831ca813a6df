from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop, Runner

from mmdet_cdetr.registry import HOOKS
from mmdet_cdetr.utils.errors import ConfigError

_LOOPS = (('train', '_train_loop'), ('val', '_val_loop'), ('test',
                                                           '_test_loop'))


@HOOKS.register_module(name=['ClassCountCheckHook', 'NumClassCheckHook'])
class ClassCountCheckHook(Hook):
    """The head's ``num_classes`` must equal the number of classes of every
    data set the run uses, checked before the run starts.

    Shadows mmdet's hook of the same name in the ``mmdet_cdetr`` scope:
    mmdet's checks each split only when its epoch starts (validation after a
    whole training epoch) and fails with an ``AssertionError``; a mismatch
    otherwise surfaces in ``CocoMetric`` after an epoch. Here it is a
    ``ValueError`` naming the key, both numbers and the classes, before
    anything is trained.
    """

    def before_run(self, runner: Runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        heads = [(name, module.num_classes)
                 for name, module in model.named_modules()
                 if isinstance(getattr(module, 'num_classes', None), int)
                 and not name.endswith('rpn_head')]
        for split, attr in _LOOPS:
            loop = getattr(runner, attr, None)
            if not isinstance(loop, BaseLoop):
                continue
            classes = loop.dataloader.dataset.metainfo.get('classes')
            if classes is None:
                continue
            if isinstance(classes, str):
                raise ConfigError(
                    f'{split} metainfo.classes is the string {classes!r}; '
                    f'write a tuple: classes=({classes!r}, )')
            for name, num_classes in heads:
                if num_classes != len(classes):
                    raise ConfigError(
                        f'model.{name}.num_classes={num_classes} but the '
                        f'{split} data set has {len(classes)} classes '
                        f'({", ".join(classes)}): set '
                        f'model.{name}.num_classes={len(classes)}')
