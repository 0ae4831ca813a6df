# Conditional DETR R50 with an exponential moving average of the weights
# (MMEngine's EMAHook): checkpoints carry the averaged weights beside the
# trained ones, and validation and tools/test.py evaluate the averaged ones.
_base_ = './conditional_detr_r50_8x2_50e_coco.py'

custom_hooks = _base_.custom_hooks + [
    dict(
        type='EMAHook',
        ema_type='ExpMomentumEMA',
        momentum=0.0002,
        update_buffers=True,
        priority=49)
]
