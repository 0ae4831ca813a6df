"""Speed and precision machinery, apart from the paper's layers.

The model asks for attention (:func:`multi_head_attention`), dropout
(:class:`Dropout`, :func:`dropout`), linear layers (:func:`linear`) and
float32 regions (:func:`autocast_off`), and the detector hands its modules
to :func:`use_fast_kernels` once (inference tools hand a model with final
weights to :func:`pack_for_inference`); none of them knows which kernel
answers: each device-dependent choice is made in one function of
:mod:`.device_choices`.
Every kernel is tested against the plain computation it replaces.
"""
from .attention import (attention_weights, blocked_mask, multi_head_attention,
                        split_heads)
from .device_choices import (channels_last_backbone, fast_autocast,
                             fold_batch_norms, keep_freed_cpu_memory,
                             materialise_reduced_precision_attention,
                             numpy_dropout_masks, onednn_linear,
                             pack_inference_convolutions,
                             pack_inference_linears, pad_value_heads)
from .fast_dropout import Dropout, dropout, keep_mask, use_fast_dropout
from .fast_kernels import pack_for_inference, use_fast_kernels
from .fast_linear import Linear, linear, use_fast_linear
from .folded_batch_norm import fold_batch_norms_into_convs
from .fused_detr_encoder import FusedDetrTransformerEncoder
from .packed_convolution import pack_convolutions_for_inference
from .packed_linear import PackedLinear, pack_linears_for_inference
from .precision import autocast_off
from .view_safe_relu import ViewSafeReLU, use_view_safe_relu

__all__ = [
    'attention_weights', 'blocked_mask', 'multi_head_attention', 'split_heads',
    'channels_last_backbone', 'fast_autocast', 'fold_batch_norms',
    'keep_freed_cpu_memory', 'materialise_reduced_precision_attention',
    'numpy_dropout_masks', 'onednn_linear', 'pack_inference_convolutions',
    'pack_inference_linears', 'pad_value_heads', 'Dropout', 'dropout',
    'keep_mask', 'use_fast_dropout', 'use_fast_kernels', 'pack_for_inference',
    'fold_batch_norms_into_convs', 'pack_convolutions_for_inference',
    'PackedLinear', 'pack_linears_for_inference',
    'FusedDetrTransformerEncoder', 'Linear', 'linear', 'use_fast_linear',
    'autocast_off', 'ViewSafeReLU', 'use_view_safe_relu'
]
