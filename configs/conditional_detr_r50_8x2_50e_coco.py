# The path users type (README, docs, CI): an alias of conditional_detr/'s.
_base_ = ['./conditional_detr/conditional_detr_r50_8x2_50e_coco.py']
