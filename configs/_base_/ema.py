# The exponential moving average of the weights (MMEngine's EMAHook), for
# configs to append to their custom_hooks: checkpoints then carry the
# averaged weights beside the trained ones, and validation and
# tools/test.py evaluate the averaged ones.
ema_hook = dict(
    type='EMAHook',
    ema_type='ExpMomentumEMA',
    momentum=0.0002,
    update_buffers=True,
    priority=49)
