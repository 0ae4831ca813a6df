# Diagnostic of the convergence study: mmdet's built-in Conditional DETR with
# the last box-regression layer initialised to zero, as ours and the
# official implementation do (mmdet's built-in head keeps nn.Linear's
# default initialisation there; it is the only difference at start).
_base_ = './mmdet_conditional_detr_r18_scratch.py'

model = dict(
    bbox_head=dict(
        init_cfg=dict(
            type='Constant',
            layer='NoSuchLayer',
            val=0,
            override=dict(type='Constant', name='fc_reg', val=0, bias=0))))
