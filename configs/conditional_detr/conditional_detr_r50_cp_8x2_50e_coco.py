# Conditional DETR R50 with activation checkpointing of the backbone's
# blocks and of every encoder and decoder layer: in training each keeps its
# input only and recomputes its activations in the backward pass. Less
# memory for about one more forward pass a step; the same losses and
# gradients, dropout included (docs/train_test.md has the measured memory).
_base_ = './conditional_detr_r50_8x2_50e_coco.py'

model = dict(
    backbone=dict(with_cp=True),
    encoder=dict(with_cp=True),
    decoder=dict(with_cp=True))
