"""Child registries of MMDetection's, under the scope ``mmdet_cdetr``.

With ``default_scope = 'mmdet_cdetr'`` a config's ``type='X'`` is looked up
here first and then in mmdet (and mmengine), so our components shadow mmdet's
of the same name while ``'mmdet.X'`` still reaches mmdet's own.
"""
from mmdet import registry as mmdet_registry
from mmengine import registry as mmengine_registry
from mmengine.registry import Registry

_SCOPE = 'mmdet_cdetr'


def _child(parent: Registry, locations: list = ()) -> Registry:
    return Registry(
        parent.name, parent=parent, scope=_SCOPE, locations=list(locations))


RUNNERS = _child(mmdet_registry.RUNNERS)
RUNNER_CONSTRUCTORS = _child(mmdet_registry.RUNNER_CONSTRUCTORS)
LOOPS = _child(mmdet_registry.LOOPS)
HOOKS = _child(mmdet_registry.HOOKS, ['mmdet_cdetr.engine'])
LOG_PROCESSORS = _child(mmdet_registry.LOG_PROCESSORS)
OPTIMIZERS = _child(mmdet_registry.OPTIMIZERS)
OPTIM_WRAPPERS = _child(mmdet_registry.OPTIM_WRAPPERS, ['mmdet_cdetr.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = _child(mmdet_registry.OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = _child(mmdet_registry.PARAM_SCHEDULERS,
                          ['mmdet_cdetr.engine'])
DATASETS = _child(mmdet_registry.DATASETS, ['mmdet_cdetr.datasets'])
DATA_SAMPLERS = _child(mmdet_registry.DATA_SAMPLERS)
TRANSFORMS = _child(mmdet_registry.TRANSFORMS, ['mmdet_cdetr.datasets'])
MODELS = _child(mmdet_registry.MODELS, ['mmdet_cdetr.models'])
MODEL_WRAPPERS = _child(mmdet_registry.MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _child(mmdet_registry.WEIGHT_INITIALIZERS)
TASK_UTILS = _child(mmdet_registry.TASK_UTILS, ['mmdet_cdetr.models'])
METRICS = _child(mmdet_registry.METRICS, ['mmdet_cdetr.evaluation'])
EVALUATOR = _child(mmdet_registry.EVALUATOR)
VISUALIZERS = _child(mmdet_registry.VISUALIZERS)
VISBACKENDS = _child(mmdet_registry.VISBACKENDS)
# mmdet has no child of mmengine's FUNCTIONS (collate functions); without one
# mmdet's DetInferencer warns that scope mmdet_cdetr has no registry there.
FUNCTIONS = _child(mmengine_registry.FUNCTIONS)
