# Quick start: a small Conditional DETR trained from scratch on the bundled
# synthetic shapes (tools/misc/make_synthetic_coco.py). Used by `make demo`
# and the tests; learns within minutes on 2 CPU cores.
_base_ = '../conditional_detr/conditional_detr_r50_8x2_50e_coco.py'

data_root = 'data/synthetic_coco/'
metainfo = dict(
    classes=('square', 'circle', 'triangle'),
    palette=[(220, 20, 60), (0, 160, 80), (30, 60, 220)])
embed_dims = 128
num_queries = 20

model = dict(
    num_queries=num_queries,
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=18,
        base_channels=32,
        num_stages=3,
        strides=(1, 2, 1),
        dilations=(1, 1, 1),
        out_indices=(2, ),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(in_channels=[128], out_channels=embed_dims),
    positional_encoding=dict(num_feats=embed_dims // 2),
    encoder=dict(
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=512))),
    decoder=dict(
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims),
            cross_attn_cfg=dict(embed_dims=embed_dims),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=512))),
    bbox_head=dict(num_classes=3, embed_dims=embed_dims))

# Images are resized like the test pipeline's, so one that is far larger than
# the synthetic 128x128 ones (e.g. from your own data) cannot exhaust memory.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# Everything below follows train_cfg.max_epochs, so
# `--cfg-options train_cfg.max_epochs=N` gives a sensible schedule: the lr
# drops at 80% of the epochs, box AP is evaluated every 2 epochs (and after
# the last), and the last checkpoint is always written.
train_cfg = dict(max_epochs=20, val_interval=2)
optim_wrapper = dict(
    optimizer=dict(lr=4e-4),
    clip_grad=dict(max_norm=1.0),
    paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=1.0))))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, end=100),
    dict(
        type='FractionalMultiStepLR',
        by_epoch=True,
        milestone_fractions=[0.8],
        gamma=0.1)
]
default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=2, max_keep_ckpts=1))
# The same numbers on every run (`make demo` prints the same AP twice).
randomness = dict(seed=0)
auto_scale_lr = dict(base_batch_size=8)
