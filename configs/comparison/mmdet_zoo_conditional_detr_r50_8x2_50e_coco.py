# MMDetection's built-in Conditional DETR, ResNet-50, 50 epochs (zoo: 41.1 AP).
# MMDetection's own model, unchanged, for side-by-side runs with our tools
# (which also load MMEngine checkpoints under torch >= 2.6). Its zoo config
# as it is: no dropout on the attention outputs, MMDetection's hooks. The
# benchmarks' ../benchmark/mmdet_conditional_detr_r50_8x2_50e_coco.py builds
# the same classes from our config instead (dropout as released, our hooks).
_base_ = 'mmdet::conditional_detr/conditional-detr_r50_8xb2-50e_coco.py'

default_scope = 'mmdet_cdetr'
custom_imports = dict(imports=['mmdet_cdetr'], allow_failed_imports=False)
