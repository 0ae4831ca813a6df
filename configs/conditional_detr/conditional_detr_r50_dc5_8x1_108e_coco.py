# Conditional DETR, DC5-R50, the paper's 108-epoch schedule (drop at 80).
_base_ = './conditional_detr_r50_dc5_8x1_50e_coco.py'

max_epochs = 108
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', end=max_epochs, milestones=[80], gamma=0.1)
]
