from .hooks import AtomicCheckpointHook, RandomStateHook

__all__ = ['AtomicCheckpointHook', 'RandomStateHook']
