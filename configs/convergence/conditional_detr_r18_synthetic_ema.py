# The quick-start model with the EMA of the R50 EMA config (MMEngine's
# EMAHook, the same momentum): what the average of the weights does on the
# synthetic task, beside the quick-start config, over seeds
# (docs/train_test.md#ema-of-the-weights).
_base_ = '../quickstart/conditional_detr_r18_synthetic.py'

custom_hooks = _base_.custom_hooks + [
    dict(
        type='EMAHook',
        ema_type='ExpMomentumEMA',
        momentum=0.0002,
        update_buffers=True,
        priority=49)
]
