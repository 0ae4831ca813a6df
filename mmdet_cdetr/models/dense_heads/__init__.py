from .conditional_detr_head import ConditionalDETRHead
from .top_k_detections import boxes_to_original, top_k_detections

__all__ = ['ConditionalDETRHead', 'boxes_to_original', 'top_k_detections']
