# DETR in the convergence study: mmdet's DETR and DETRHead with DETR's own
# loss and matching (softmax cross-entropy with a background class), on the
# same backbone, encoder, data, schedule and seed as Conditional DETR.
_base_ = './conditional_detr_r18_scratch.py'

embed_dims = 256
attn_cfg = dict(
    embed_dims=embed_dims, num_heads=8, dropout=0.1, batch_first=True)
model = dict(
    type='mmdet.DETR',
    decoder=dict(
        _delete_=True,
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=attn_cfg,
            cross_attn_cfg=attn_cfg,
            ffn_cfg=dict(
                embed_dims=embed_dims,
                feedforward_channels=512,
                num_fcs=2,
                ffn_drop=0.1,
                act_cfg=dict(type='ReLU', inplace=True))),
        return_intermediate=True),
    bbox_head=dict(
        _delete_=True,
        type='mmdet.DETRHead',
        num_classes=3,
        embed_dims=embed_dims,
        loss_cls=dict(
            type='CrossEntropyLoss',
            bg_cls_weight=0.1,
            use_sigmoid=False,
            loss_weight=1.0,
            class_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(
        assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='ClassificationCost', weight=1.),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0)
            ])))

# DETR converges slowly: three times the others' epochs (its lr drop at the
# same 80% of its schedule), so that "epochs to DETR's final AP" is measured
# against a DETR close to its plateau (the study reports how much its AP
# still rose over its last quarter).
max_epochs = 60
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs))
