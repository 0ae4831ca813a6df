"""The command-line layer of ``tools/``: the shared flags, the config and
runner they give, multi-process runs, the work-dir lock and the one-line
report of user errors. Nothing else in the package imports it."""
from .config_check import check_cfg_options, check_training_values, read_config
from .distributed import (check_launcher_environment, finish_distributed,
                          prepare_cpu_distributed)
from .error_report import report_user_errors
from .resume import apply_resume
from .runner import add_runner_args, build_runner, load_config
from .test_args import add_test_args, apply_test_args, use_flip_tta
from .work_dir_lock import lock_work_dir

__all__ = [
    'add_runner_args', 'add_test_args', 'apply_resume', 'apply_test_args',
    'build_runner', 'check_cfg_options', 'check_launcher_environment',
    'check_training_values', 'finish_distributed', 'load_config',
    'lock_work_dir', 'prepare_cpu_distributed', 'read_config',
    'report_user_errors', 'use_flip_tta'
]
