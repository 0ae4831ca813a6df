# The fine-tuning recipe of conditional_detr_r50_8x2_12e_custom.py on the
# quick-start model, for a try-out on the CPU: the 3-class demo model
# (`make demo`) fine-tuned onto two of its classes (docs/custom_dataset.md).
_base_ = '../quickstart/conditional_detr_r18_synthetic.py'

data_root = 'data/synthetic_coco/'
metainfo = dict(
    classes=('square', 'circle'), palette=[(220, 20, 60), (0, 160, 80)])
load_from = 'work_dirs/demo/epoch_20.pth'

train_dataloader = dict(dataset=dict(metainfo=metainfo))
val_dataloader = dict(dataset=dict(metainfo=metainfo))
test_dataloader = val_dataloader

model = dict(bbox_head=dict(num_classes=len(metainfo['classes'])))
# No warm-up: the weights are trained already.
train_cfg = dict(max_epochs=6, val_interval=2)
param_scheduler = [
    dict(
        type='FractionalMultiStepLR',
        by_epoch=True,
        milestone_fractions=[0.8],
        gamma=0.1)
]
