"""Load published Conditional DETR weights into our model.

One module per source (the official repository, HuggingFace transformers,
MMDetection's model zoo) turns a state dict into our parameter names;
:mod:`.common` checks the result against the model a config builds,
reports unused and unfilled keys and writes an MMEngine checkpoint.
"""
from .coco_labels import COCO_CATEGORY_IDS, COCO_CLASSES, rows_from_id2label
from .common import (Conversion, ConversionReport, IncompleteConversionError,
                     convert_and_save, converter_parser, finish, fit_to_model,
                     zoo_config)
from .huggingface import (convert_huggingface, hf_default_config,
                          load_huggingface)
from .mmdet_zoo import convert_mmdet, load_mmdet
from .official import convert_official, load_official, official_depth
from .publish import publish_checkpoint

__all__ = [
    'COCO_CATEGORY_IDS', 'COCO_CLASSES', 'Conversion', 'ConversionReport',
    'IncompleteConversionError', 'convert_and_save', 'converter_parser',
    'convert_huggingface', 'convert_mmdet', 'convert_official', 'finish',
    'fit_to_model', 'hf_default_config', 'load_huggingface', 'load_mmdet',
    'load_official', 'official_depth', 'publish_checkpoint',
    'rows_from_id2label', 'zoo_config'
]
