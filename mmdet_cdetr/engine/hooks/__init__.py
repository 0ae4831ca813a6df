from .atomic_checkpoint_hook import AtomicCheckpointHook
from .checkpoint_fit_hook import CheckpointFitHook
from .class_count_check_hook import ClassCountCheckHook
from .fine_tune_hook import FineTuneHook
from .random_state_hook import RandomStateHook
from .run_guard_hooks import (DivergenceError, FiniteLossHook, ScheduleEndHook,
                              WorkDirGuardHook, add_run_guards)
from .speed_up_hook import SpeedUpHook

__all__ = [
    'AtomicCheckpointHook', 'CheckpointFitHook', 'FineTuneHook',
    'ClassCountCheckHook', 'RandomStateHook', 'DivergenceError',
    'FiniteLossHook', 'ScheduleEndHook', 'WorkDirGuardHook', 'add_run_guards',
    'SpeedUpHook'
]
