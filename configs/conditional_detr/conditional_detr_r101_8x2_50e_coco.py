# Conditional DETR, ResNet-101, 8 GPUs x 2 images, 50 epochs.
_base_ = './conditional_detr_r50_8x2_50e_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
