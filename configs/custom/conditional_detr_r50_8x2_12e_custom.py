# Fine-tune Conditional DETR R50 from COCO weights onto your own COCO-format
# data set (docs/custom_dataset.md). Copy this file and change the keys
# marked CHANGE; everything else is the COCO recipe of the parent config.
# The base is package-qualified, so the copy works in any folder once
# mmdet-cdetr is installed (pip install; see the README).
_base_ = 'mmdet_cdetr::conditional_detr/conditional_detr_r50_8x2_50e_coco.py'

# CHANGE: where your data set lives, and its class names, exactly as the
# `name`s of the annotation files' `categories` (any order; the order here
# defines the labels).
data_root = 'data/custom/'
metainfo = dict(classes=('person', 'bicycle', 'car'))
# CHANGE: the checkpoint to start from: the official R50 release (COCO),
# downloaded once and converted as it is loaded, or any file or URL of ours,
# MMDetection's, the official repository's or HuggingFace's
# (docs/converting_weights.md). Its 80-class classifier is re-initialised
# for len(classes) classes; the rest is loaded.
load_from = ('https://github.com/DeppMeng/ConditionalDETR/releases/download/'
             'v1.0/ConditionalDETR_r50_epoch50.pth')

# CHANGE (only if your layout differs): annotation files and image folders.
train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/')))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# Follows the classes above: keep it that way.
model = dict(bbox_head=dict(num_classes=len(metainfo['classes'])))

# A short schedule: fine-tuning needs far fewer epochs than the 50 of COCO
# training from ImageNet weights. The lr drops at 80% of max_epochs, also
# when you change it with --cfg-options train_cfg.max_epochs=N.
train_cfg = dict(max_epochs=12, val_interval=1)
param_scheduler = [
    dict(
        type='FractionalMultiStepLR',
        by_epoch=True,
        milestone_fractions=[0.8],
        gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2))
# The recipe's lr (1e-4, backbone 1e-5) is for 16 images per step (8 GPUs x
# 2). On fewer GPUs add --auto-scale-lr to scale it by the batch you use.
auto_scale_lr = dict(base_batch_size=16)
