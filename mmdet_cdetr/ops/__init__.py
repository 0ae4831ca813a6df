"""Speed and precision machinery, apart from the paper's layers.

The model asks for attention (:func:`multi_head_attention`), dropout
(:class:`Dropout`, :func:`dropout`) and float32 regions
(:func:`autocast_off`) and does not know which kernel answers: each
device-dependent choice is made in one function of :mod:`.device_choices`.
Every kernel is tested against the plain computation it replaces.
"""
from .attention import (attention_weights, blocked_mask, multi_head_attention,
                        split_heads)
from .device_choices import (channels_last_backbone, numpy_dropout_masks,
                             pad_value_heads)
from .fast_dropout import Dropout, dropout, keep_mask, use_fast_dropout
from .fused_detr_encoder import FusedDetrTransformerEncoder
from .precision import autocast_off

__all__ = [
    'attention_weights', 'blocked_mask', 'multi_head_attention', 'split_heads',
    'channels_last_backbone', 'numpy_dropout_masks', 'pad_value_heads',
    'Dropout', 'dropout', 'keep_mask', 'use_fast_dropout',
    'FusedDetrTransformerEncoder', 'autocast_off'
]
