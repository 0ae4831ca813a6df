from .fine_tune_hook import FineTuneHook
from .num_class_check_hook import NumClassCheckHook

__all__ = ['FineTuneHook', 'NumClassCheckHook']
