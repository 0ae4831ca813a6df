from .atomic_checkpoint_hook import AtomicCheckpointHook
from .checkpoint_fit_hook import CheckpointFitHook
from .fine_tune_hook import FineTuneHook
from .num_class_check_hook import NumClassCheckHook
from .random_state_hook import RandomStateHook
from .run_guard_hooks import (DivergenceError, FiniteLossHook, ScheduleEndHook,
                              WorkDirGuardHook, add_run_guards)
from .speed_up_hook import SpeedUpHook

__all__ = [
    'AtomicCheckpointHook', 'CheckpointFitHook', 'FineTuneHook',
    'NumClassCheckHook', 'RandomStateHook', 'DivergenceError',
    'FiniteLossHook', 'ScheduleEndHook', 'WorkDirGuardHook', 'add_run_guards',
    'SpeedUpHook'
]
