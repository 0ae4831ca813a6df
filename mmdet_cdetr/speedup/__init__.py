"""CPU speed-ups, applied to a built model by one named step
(:func:`apply_speedups`); the model's own layers never depend on them."""
from .apply import (Enable, apply_configured_speedups, apply_speedups,
                    apply_wanted_speedups, model_device, speedup_setting,
                    speedups_wanted)
from .fast_dropout import FastDropout, dropout, keep_mask, use_fast_dropout
from .folded_batch_norm import (ConvFoldingNorm, NormFoldedIntoConv,
                                fold_batch_norms)

__all__ = [
    'Enable', 'apply_configured_speedups', 'apply_speedups',
    'apply_wanted_speedups', 'model_device', 'speedup_setting',
    'speedups_wanted', 'FastDropout', 'dropout', 'keep_mask',
    'use_fast_dropout', 'ConvFoldingNorm', 'NormFoldedIntoConv',
    'fold_batch_norms'
]
