# The quick-start model with the EMA of the R50 EMA config (MMEngine's
# EMAHook, the same momentum): what the average of the weights does on the
# synthetic task, beside the quick-start config, over seeds
# (docs/train_test.md#ema-of-the-weights).
_base_ = [
    '../quickstart/conditional_detr_r18_synthetic.py', '../_base_/ema.py'
]

custom_hooks = _base_.custom_hooks + [_base_.ema_hook]
