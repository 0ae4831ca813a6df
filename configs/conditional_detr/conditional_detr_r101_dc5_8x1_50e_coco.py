# Conditional DETR, DC5-R101, one image per GPU (total batch 8), 50 epochs.
_base_ = './conditional_detr_r101_8x2_50e_coco.py'

model = dict(backbone=dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)))
train_dataloader = dict(batch_size=1)
auto_scale_lr = dict(base_batch_size=8)
