# Our R50 model with its backbone and neck in PyTorch's default NCHW layout:
# a reference row of tools/analysis_tools/benchmark.py that shows what the
# channels-last backbone gains (and what an ONNX export is compared with
# when PyTorch runs without it).
_base_ = '../conditional_detr_r50_8x2_50e_coco.py'

model = dict(backbone_channels_last=False)
