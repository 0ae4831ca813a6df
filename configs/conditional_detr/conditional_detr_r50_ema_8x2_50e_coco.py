# Conditional DETR R50 with an exponential moving average of the weights
# (MMEngine's EMAHook): checkpoints carry the averaged weights beside the
# trained ones, and validation and tools/test.py evaluate the averaged ones.
_base_ = ['./conditional_detr_r50_8x2_50e_coco.py', '../_base_/ema.py']

custom_hooks = _base_.custom_hooks + [_base_.ema_hook]
