# Group-Conditional DETR (Group DETR on Conditional DETR), ResNet-50, 8 GPUs x
# 2 images, 50 epochs: 11 groups of 300 queries in training, each group
# matched one-to-one to the ground truth and attending only to itself;
# inference decodes group 0 only. As the official GroupDETR branch
# (--group_detr 11).
_base_ = '../conditional_detr/conditional_detr_r50_8x2_50e_coco.py'

model = dict(
    num_query_groups=11,
    train_cfg=dict(assigner=dict(type='GroupHungarianAssigner')))
