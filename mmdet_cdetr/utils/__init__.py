from .autocast_warning import warn_if_autocast_is_slow
from .checkpoint_safety import allow_mmengine_checkpoints
from .errors import (ArgumentError, CheckpointError, ConfigError,
                     InputNotFoundError, UserError)
from .openmmlab_package import register_all_modules, register_openmmlab_package
from .quiet_init import init_weights_quietly

__all__ = [
    'ArgumentError', 'CheckpointError', 'ConfigError', 'InputNotFoundError',
    'UserError', 'allow_mmengine_checkpoints', 'init_weights_quietly',
    'register_all_modules', 'register_openmmlab_package',
    'warn_if_autocast_is_slow'
]
