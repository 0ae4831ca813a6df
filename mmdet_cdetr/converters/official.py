"""Checkpoints of the official repository (Atten4Vis/ConditionalDETR).

Layout (``models/conditional_detr.py``, ``models/transformer.py``): the
torchvision ResNet under ``backbone.0.body`` (frozen BatchNorm: no batch
counters), ``input_proj``, ``query_embed``, encoder layers with
``nn.MultiheadAttention`` (packed ``in_proj``, as mmcv's
``MultiheadAttention`` keeps it under ``attn``), ``linear1/2`` and
``norm1/2``; decoder layers with separate ``sa_*``/``ca_*`` projections,
``self_attn/cross_attn.out_proj``, ``linear1/2`` and ``norm1/2/3``;
``transformer.decoder.{norm,query_scale,ref_point_head}``, ``class_embed``
with 91 logits indexed by COCO category id and the 3-layer ``bbox_embed``.
DC5 changes no parameter, so a DC5 checkpoint converts like the plain one
(evaluate it with the DC5 config). Checkpoints of the ``GroupDETR`` branch
(``--group_detr K``) differ only in ``query_embed``: K groups of 300 rows.
"""
import re
from typing import Dict, List, Optional

from mmengine.config import Config
from torch import Tensor

from mmdet_cdetr.utils.errors import CheckpointError
from .checkpoint_format import OFFICIAL, OFFICIAL_GROUP_DETR, require_format
from .coco_labels import COCO_CATEGORY_IDS, select_classifier_rows
from .common import (Conversion, Rule, load_checkpoint_file, rename,
                     resnet_depth)

_LAYER = r'transformer\.(encoder|decoder)\.layers\.(\d+)\.'
_ENCODER_LAYER = r'transformer\.encoder\.layers\.(\d+)\.'
_DECODER_LAYER = r'transformer\.decoder\.layers\.(\d+)\.'
_FFN_AND_NORMS = {
    'linear1': 'ffn.layers.0.0',
    'linear2': 'ffn.layers.1',
    'norm1': 'norms.0',
    'norm2': 'norms.1',
    'norm3': 'norms.2',
}


def head_rules(classifier: str, box_mlp: str) -> List[Rule]:
    """Classifier and 3-layer box MLP, named ``classifier`` and
    ``box_mlp.layers.{0,1,2}`` in the source (official and HuggingFace)."""
    box_layers = {
        '0': 'reg_ffn.layers.0.0',
        '1': 'reg_ffn.layers.1',
        '2': 'fc_reg'
    }
    return [
        (rf'{classifier}\.(weight|bias)', r'bbox_head.fc_cls.\1'),
        (rf'{box_mlp}\.layers\.([012])\.(weight|bias)',
         lambda m: f'bbox_head.{box_layers[m[1]]}.{m[2]}'),
    ]


RULES: List[Rule] = [
    (r'backbone\.0\.body\.(.+)', r'backbone.\1'),
    (r'input_proj\.(weight|bias)', r'neck.convs.0.conv.\1'),
    (r'query_embed\.weight', 'query_embedding.weight'),
    (_ENCODER_LAYER +
     r'self_attn\.(in_proj_weight|in_proj_bias|out_proj\.\w+)',
     r'encoder.layers.\1.self_attn.attn.\2'),
    (_DECODER_LAYER + r'sa_(\w+_proj)\.(weight|bias)',
     r'decoder.layers.\1.self_attn.\2.\3'),
    (_DECODER_LAYER + r'ca_(\w+_proj)\.(weight|bias)',
     r'decoder.layers.\1.cross_attn.\2.\3'),
    (_DECODER_LAYER + r'(self_attn|cross_attn)\.out_proj\.(weight|bias)',
     r'decoder.layers.\1.\2.out_proj.\3'),
    (_LAYER + r'(linear[12]|norm[123])\.(weight|bias)',
     lambda m: f'{m[1]}.layers.{m[2]}.{_FFN_AND_NORMS[m[3]]}.{m[4]}'),
    (r'transformer\.decoder\.norm\.(weight|bias)', r'decoder.post_norm.\1'),
    (r'transformer\.decoder\.(query_scale|ref_point_head)\.(.+)',
     r'decoder.\1.\2'),
] + head_rules('class_embed', 'bbox_embed')


def load_official(path: str) -> Dict[str, Tensor]:
    """The ``model`` state dict of an official checkpoint (of the main
    branch or the GroupDETR one). Training checkpoints also hold ``args``
    (an ``argparse.Namespace``), which is allowed for this load only."""
    checkpoint = load_checkpoint_file(path)
    require_format(path, checkpoint, (OFFICIAL, OFFICIAL_GROUP_DETR))
    if 'model' not in checkpoint:
        raise CheckpointError(f'{path} has no "model" entry (keys: '
                              f'{", ".join(map(str, checkpoint))}): not a '
                              'checkpoint of the official repository')
    return checkpoint['model']


def official_depth(state_dict: Dict[str, Tensor]) -> int:
    """ResNet depth of an official checkpoint, from its blocks per stage."""
    blocks = []
    for stage in range(1, 5):
        found = {
            int(m[1])
            for key in state_dict
            for m in
            [re.match(rf'backbone\.0\.body\.layer{stage}\.(\d+)\.', key)] if m
        }
        blocks.append(len(found))
    return resnet_depth(blocks)


def convert_official(state_dict: Dict[str, Tensor],
                     config: Optional[str] = None) -> Conversion:
    """Our names for an official ``model`` state dict; the 91 class logits
    become mmdet's 80 labels by COCO category id. With ``config``, the
    query groups of a GroupDETR checkpoint are fitted to its model
    (:func:`fit_query_groups`); without, all rows are kept (converting as
    a checkpoint is loaded, where the model is not known)."""
    conversion = rename(state_dict, RULES)
    conversion.notes.append(
        select_classifier_rows(conversion.state_dict, list(COCO_CATEGORY_IDS)))
    if config is not None:
        fit_query_groups(conversion, config)
    return conversion


def fit_query_groups(conversion: Conversion, config: str) -> None:
    """Keep the query groups (``num_queries`` rows each) of the converted
    ``query_embedding`` that the model of ``config`` holds: all of them for
    a group config of the same K (to continue training), group 0 for a
    plain config (the model used at inference). Any other row count is
    left for the shape check to report."""
    key = 'query_embedding.weight'
    weight = conversion.state_dict.get(key)
    model = Config.fromfile(config).model
    num_queries = model.num_queries
    rows = num_queries * model.get('num_query_groups', 1)
    if weight is None or len(weight) % num_queries:
        return
    groups = len(weight) // num_queries
    if groups > 1 and len(weight) == rows:
        conversion.notes.append(
            f'query embedding: all {groups} query groups kept')
    elif groups > 1 and rows == num_queries:
        conversion.state_dict[key] = weight[:num_queries]
        conversion.notes.append(
            f'query embedding: kept group 0 of the checkpoint\'s {groups} '
            f'query groups ({num_queries} of {len(weight)} rows), as the '
            'config is not a group config (num_query_groups=1)')
