# Group-Conditional DETR, DC5-R50 (last stage dilated), 8 GPUs x 1 image,
# 50 epochs, 11 query groups.
_base_ = '../conditional_detr/conditional_detr_r50_dc5_8x1_50e_coco.py'

model = dict(
    num_query_groups=11,
    train_cfg=dict(assigner=dict(type='GroupHungarianAssigner')))
