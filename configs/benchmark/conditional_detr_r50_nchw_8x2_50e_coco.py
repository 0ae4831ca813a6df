# Ours with the backbone fed NCHW images, as mmdet's built-in model feeds
# them: the benchmark row that separates the transformer's speed-up from the
# channels-last backbone's.
_base_ = '../conditional_detr_r50_8x2_50e_coco.py'

model = dict(backbone_channels_last=False)
