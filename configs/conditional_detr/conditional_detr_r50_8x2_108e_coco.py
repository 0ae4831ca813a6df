# Conditional DETR, ResNet-50, the paper's 108-epoch schedule (drop at 80).
_base_ = './conditional_detr_r50_8x2_50e_coco.py'

max_epochs = 108
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', end=max_epochs, milestones=[80], gamma=0.1)
]
