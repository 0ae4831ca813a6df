from .checkpoint_safety import allow_mmengine_checkpoints
from .cli import init_cpu_distributed, report_user_errors

__all__ = [
    'allow_mmengine_checkpoints', 'init_cpu_distributed', 'report_user_errors'
]
