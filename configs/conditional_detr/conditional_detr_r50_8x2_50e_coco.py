# Conditional DETR, ResNet-50, 8 GPUs x 2 images, 50 epochs (lr x0.1 at 40).
# Inherits mmdet's own Conditional DETR config (data, recipe, layer sizes);
# in the mmdet_cdetr scope its type names resolve to our components, and
# mmdet's built-in model stays reachable as `mmdet.ConditionalDETR`.
_base_ = 'mmdet::conditional_detr/conditional-detr_r50_8xb2-50e_coco.py'

default_scope = 'mmdet_cdetr'
custom_imports = dict(imports=['mmdet_cdetr'], allow_failed_imports=False)

# Dicts inherited from an `mmdet::` base carry `_scope_='mmdet'`, which would
# build mmdet's classes: the model and the data sets are built in our scope.
model = dict(
    _scope_='mmdet_cdetr',
    # Each test image gets the detections it gets alone, whatever else is in
    # its batch (its backbone features are computed at its own size), so a
    # test batch of several images gives the AP of batch 1.
    test_cfg=dict(batch_independent=True),
    decoder=dict(
        layer_cfg=dict(
            # As released: dropout 0.1 on the attention weights and on each
            # attention output before its residual connection.
            self_attn_cfg=dict(attn_drop=0.1, proj_drop=0.1),
            cross_attn_cfg=dict(attn_drop=0.1, proj_drop=0.1))))
train_dataloader = dict(dataset=dict(_scope_='mmdet_cdetr'))
val_dataloader = dict(dataset=dict(_scope_='mmdet_cdetr'))
test_dataloader = val_dataloader

# Checked before anything is trained: the head's num_classes against every
# data set's classes. A training run's load_from may bring a classifier for
# another number of classes (fine-tuning: it is re-initialised and the rest
# loads); testing and --resume refuse one. Any other difference between a
# checkpoint and the model (another architecture or config) is refused
# before loading. Checkpoints are written
# atomically, old ones removed last, with every random state, so that
# --resume repeats the uninterrupted run (docs/long_runs.md). With several
# processes, buffers (batch-norm statistics of a trained backbone) are
# averaged over them after every epoch, before the checkpoint is saved and
# the model evaluated, so that every rank evaluates the saved model.
default_hooks = dict(
    checkpoint=dict(_scope_='mmdet_cdetr', type='AtomicCheckpointHook'))
# SpeedUpHook: CPU speed-ups applied to the built model before training
# and testing (channels-last backbone and neck, faster dropout masks, and
# for testing batch norms folded into convolutions; docs/speed.md). 'auto':
# only on the CPU, where they were measured to pay; True/False force them.
custom_hooks = [
    dict(type='ClassCountCheckHook'),
    dict(type='CheckpointFitHook'),
    dict(type='FineTuneHook'),
    dict(type='RandomStateHook'),
    dict(type='SyncBuffersHook'),
    dict(type='SpeedUpHook', enable='auto')
]
