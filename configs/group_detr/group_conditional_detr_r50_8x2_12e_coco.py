# Group-Conditional DETR R50, 12 epochs with lr x0.1 at epoch 11, as the
# official scripts/conddetr_r50_epoch12_groupdetr11.sh (paper: 37.6 AP).
_base_ = './group_conditional_detr_r50_8x2_50e_coco.py'

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', end=max_epochs, milestones=[11], gamma=0.1)
]
