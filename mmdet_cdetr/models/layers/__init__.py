from .conditional_attention import ConditionalAttention
from .conditional_detr_decoder import ConditionalDetrTransformerDecoder
from .conditional_detr_decoder_layer import \
    ConditionalDetrTransformerDecoderLayer
from .sdpa_detr_encoder import SdpaDetrTransformerEncoder

__all__ = [
    'ConditionalAttention', 'ConditionalDetrTransformerDecoder',
    'ConditionalDetrTransformerDecoderLayer', 'SdpaDetrTransformerEncoder'
]
