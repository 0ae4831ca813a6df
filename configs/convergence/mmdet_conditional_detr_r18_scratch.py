# mmdet's built-in Conditional DETR in the convergence study: same config as
# ours (same parameter names, same dropout), only the component types differ.
_base_ = './conditional_detr_r18_scratch.py'

model = dict(
    type='mmdet.ConditionalDETR',
    bbox_head=dict(type='mmdet.ConditionalDETRHead'))
