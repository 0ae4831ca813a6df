from .atomic_checkpoint_hook import AtomicCheckpointHook
from .fine_tune_hook import FineTuneHook
from .num_class_check_hook import NumClassCheckHook
from .random_state_hook import RandomStateHook

__all__ = [
    'AtomicCheckpointHook', 'FineTuneHook', 'NumClassCheckHook',
    'RandomStateHook'
]
