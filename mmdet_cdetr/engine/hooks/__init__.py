from .atomic_checkpoint_hook import AtomicCheckpointHook
from .random_state_hook import RandomStateHook

__all__ = ['AtomicCheckpointHook', 'RandomStateHook']
