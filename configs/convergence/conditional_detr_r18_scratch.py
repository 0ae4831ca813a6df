# Convergence study (paper Fig. 1b at a CPU-sized scale): our Conditional
# DETR on the bundled synthetic shapes, R18/32ch backbone from scratch.
# The DETR and mmdet built-in configs next to this one change only the model,
# so data, schedule and seed are shared by construction.
# Run them all with tools/analysis_tools/convergence.py.
_base_ = '../quickstart/conditional_detr_r18_synthetic.py'

# 20 epochs (the quick start's lr drop at 80%, epoch 16): three seeds of
# the four models, DETR three times as long, fit two hours on 2 cores.
max_epochs = 20
train_cfg = dict(max_epochs=max_epochs, val_interval=2)
default_hooks = dict(
    logger=dict(interval=50), checkpoint=dict(interval=max_epochs))
# Width 256 (the quick start has 128): mmdet's built-in Conditional DETR
# decoder hard-codes 128 sine features per coordinate of the reference point.
embed_dims = 256
model = dict(
    neck=dict(out_channels=embed_dims),
    positional_encoding=dict(num_feats=embed_dims // 2),
    encoder=dict(
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims),
            ffn_cfg=dict(embed_dims=embed_dims))),
    decoder=dict(
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims),
            cross_attn_cfg=dict(embed_dims=embed_dims),
            ffn_cfg=dict(embed_dims=embed_dims))),
    bbox_head=dict(embed_dims=embed_dims),
    # One detection per query: mmdet's DETR heads cannot return more than
    # num_queries (DETR) or num_queries x num_classes boxes (built-in), and
    # all models are scored on the same number of detections.
    test_cfg=dict(max_per_img={{_base_.num_queries}}))
