# mmdet's built-in Conditional DETR built from our R50 config: the same model
# (same parameter names, same dropout), only the implementation differs.
# The baseline of tools/analysis_tools/compare_detectors.py and the
# reference of tools/analysis_tools/benchmark.py. MMDetection's zoo config as
# it is: ../comparison/mmdet_zoo_conditional_detr_r50_8x2_50e_coco.py.
_base_ = '../conditional_detr/conditional_detr_r50_8x2_50e_coco.py'

model = dict(
    type='mmdet.ConditionalDETR',
    bbox_head=dict(type='mmdet.ConditionalDETRHead'))
# As MMDetection runs it: without our SpeedUpHook.
custom_hooks = [
    hook for hook in _base_.custom_hooks if hook['type'] != 'SpeedUpHook'
]
