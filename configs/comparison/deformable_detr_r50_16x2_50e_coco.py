# Deformable DETR, ResNet-50, 50 epochs (mmdet zoo: 44.3 AP).
# MMDetection's own model, unchanged, for side-by-side runs with our tools
# (which also load MMEngine checkpoints under torch >= 2.6).
_base_ = 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'

default_scope = 'mmdet_cdetr'
custom_imports = dict(imports=['mmdet_cdetr'], allow_failed_imports=False)
