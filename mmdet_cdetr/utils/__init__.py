from .checkpoint_safety import allow_mmengine_checkpoints
from .cli import prepare_cpu_distributed, report_user_errors

__all__ = [
    'allow_mmengine_checkpoints', 'prepare_cpu_distributed',
    'report_user_errors'
]
