from .autocast_warning import warn_if_autocast_is_slow
from .checkpoint_file import apply_resume
from .checkpoint_safety import allow_mmengine_checkpoints
from .cli import (add_runner_args, build_runner, check_launcher_environment,
                  finish_distributed, load_config, prepare_cpu_distributed,
                  report_user_errors)
from .errors import (ArgumentError, CheckpointError, ConfigError,
                     InputNotFoundError, UserError)
from .openmmlab_package import register_all_modules, register_openmmlab_package
from .quiet_init import init_weights_quietly
from .test_options import add_test_args, apply_test_args, use_flip_tta
from .work_dir_lock import lock_work_dir

__all__ = [
    'ArgumentError', 'CheckpointError', 'ConfigError', 'InputNotFoundError',
    'UserError', 'add_runner_args', 'add_test_args',
    'allow_mmengine_checkpoints', 'apply_resume', 'apply_test_args',
    'build_runner', 'check_launcher_environment', 'finish_distributed',
    'init_weights_quietly', 'load_config', 'lock_work_dir',
    'prepare_cpu_distributed', 'register_all_modules',
    'register_openmmlab_package', 'report_user_errors', 'use_flip_tta',
    'warn_if_autocast_is_slow'
]
