"""HuggingFace ``ConditionalDetrForObjectDetection`` checkpoints.

Two backbone layouts: the hub's timm ResNet, whose parameter names are
torchvision's and so mmdet's (``conv1``, ``bn1``, ``layerS.B.convK``,
``layerS.B.bnK``, ``layerS.B.downsample.{0,1}``), and HuggingFace's own
ResNet (``use_timm_backbone=False``: ``embedder.embedder``,
``encoder.stages.S.layers.B.layer.K``, ``...shortcut``). Both under
``model.backbone.conv_encoder.model``. The transformer is named as on the
hub and as ``save_pretrained`` writes it (``sa_*``/``ca_*`` projections,
``fc1/fc2``, ``out_proj``); the names of transformers >= 5 in memory
(``self_attn.q_content_proj``, ``mlp.fc1``, ``o_proj``, no
``conv_encoder``) are accepted too. The encoder's separate q/k/v
projections are packed into mmcv's ``in_proj``. The config's ``id2label``
decides which classifier row becomes which mmdet COCO label.
"""
import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from safetensors.torch import load_file
from torch import Tensor

from mmdet_cdetr.utils.errors import CheckpointError, InputNotFoundError
from .checkpoint_format import HUGGINGFACE, require_format
from .coco_labels import rows_from_id2label, select_classifier_rows
from .common import (Conversion, Rule, load_checkpoint_file, rename,
                     resnet_depth, zoo_config)
from .official import head_rules

_BACKBONE = r'model\.backbone\.(?:conv_encoder\.)?model\.'
_STAGE_BLOCK = _BACKBONE + r'encoder\.stages\.(\d+)\.layers\.(\d+)\.'
_ENCODER_LAYER = r'model\.encoder\.layers\.(\d+)\.'
_DECODER_LAYER = r'model\.decoder\.layers\.(\d+)\.'
_NORMS = {
    ('encoder', 'self_attn_layer_norm'): 'norms.0',
    ('encoder', 'final_layer_norm'): 'norms.1',
    ('decoder', 'self_attn_layer_norm'): 'norms.0',
    ('decoder', 'encoder_attn_layer_norm'): 'norms.1',
    ('decoder', 'final_layer_norm'): 'norms.2',
}
_ATTENTION = {'self_attn': 'self_attn', 'encoder_attn': 'cross_attn'}
_QKV_PART = re.compile(r'(.+\.in_proj_(?:weight|bias))\.([qkv])')


def _hf_resnet_block(m: re.Match) -> str:
    """``stages.S.layers.B.layer.K.{convolution,normalization}`` ->
    ``layer{S+1}.B.{conv,bn}{K+1}`` (HF's stages and convs count from 0)."""
    kind = 'conv' if m[4] == 'convolution' else 'bn'
    return f'backbone.layer{int(m[1]) + 1}.{m[2]}.{kind}{int(m[3]) + 1}.{m[5]}'


def _norm(m: re.Match) -> str:
    return f'{m[1]}.layers.{m[2]}.{_NORMS[(m[1], m[3])]}.{m[4]}'


RULES: List[Rule] = [
    # timm ResNet = torchvision's names = mmdet's
    (_BACKBONE + r'((?:conv1|bn1|layer[1-4]\.).+)', r'backbone.\1'),
    # HuggingFace ResNet
    (_BACKBONE + r'embedder\.embedder\.convolution\.weight',
     'backbone.conv1.weight'),
    (_BACKBONE + r'embedder\.embedder\.normalization\.(\w+)',
     r'backbone.bn1.\1'),
    (_STAGE_BLOCK + r'layer\.(\d+)\.(convolution|normalization)\.(\w+)',
     _hf_resnet_block),
    (_STAGE_BLOCK + r'shortcut\.(convolution|normalization)\.(\w+)',
     lambda m: f'backbone.layer{int(m[1]) + 1}.{m[2]}.downsample.'
     f'{0 if m[3] == "convolution" else 1}.{m[4]}'),
    (r'model\.input_projection\.(weight|bias)', r'neck.convs.0.conv.\1'),
    (r'model\.query_position_embeddings\.weight', 'query_embedding.weight'),
    # encoder: q/k/v are packed by _pack_in_proj
    (_ENCODER_LAYER + r'self_attn\.([qkv])_proj\.(weight|bias)',
     r'encoder.layers.\1.self_attn.attn.in_proj_\3.\2'),
    (_ENCODER_LAYER + r'self_attn\.(?:out_proj|o_proj)\.(weight|bias)',
     r'encoder.layers.\1.self_attn.attn.out_proj.\2'),
    # decoder attention: hub names, then transformers >= 5 names
    (_DECODER_LAYER + r'sa_(\w+_proj)\.(weight|bias)',
     r'decoder.layers.\1.self_attn.\2.\3'),
    (_DECODER_LAYER + r'ca_(\w+_proj)\.(weight|bias)',
     r'decoder.layers.\1.cross_attn.\2.\3'),
    (_DECODER_LAYER +
     r'(self_attn|encoder_attn)\.([qk])_(content|pos|pos_sine)'
     r'_proj\.(weight|bias)',
     lambda m: f'decoder.layers.{m[1]}.{_ATTENTION[m[2]]}.{m[3]}{m[4]}_proj.'
     f'{m[5]}'),
    (_DECODER_LAYER + r'(self_attn|encoder_attn)\.(v_proj|out_proj|o_proj)\.'
     r'(weight|bias)', lambda m: f'decoder.layers.{m[1]}.{_ATTENTION[m[2]]}.'
     f'{"v_proj" if m[3] == "v_proj" else "out_proj"}.{m[4]}'),
    (r'model\.(encoder|decoder)\.layers\.(\d+)\.(?:mlp\.)?fc1\.(weight|bias)',
     r'\1.layers.\2.ffn.layers.0.0.\3'),
    (r'model\.(encoder|decoder)\.layers\.(\d+)\.(?:mlp\.)?fc2\.(weight|bias)',
     r'\1.layers.\2.ffn.layers.1.\3'),
    (r'model\.(encoder|decoder)\.layers\.(\d+)\.'
     r'(self_attn_layer_norm|encoder_attn_layer_norm|final_layer_norm)\.'
     r'(weight|bias)', _norm),
    (r'model\.decoder\.layernorm\.(weight|bias)', r'decoder.post_norm.\1'),
    (r'model\.decoder\.(query_scale|ref_point_head)\.(.+)', r'decoder.\1.\2'),
] + head_rules('class_labels_classifier', 'bbox_predictor')


def _pack_in_proj(conversion: Conversion) -> None:
    """Concatenate the encoder's q, k, v projections (in this order, as
    ``nn.MultiheadAttention`` packs them) into ``in_proj_*``."""
    state = conversion.state_dict
    groups: Dict[str, Dict[str, Tensor]] = {}
    for key in [key for key in state if _QKV_PART.fullmatch(key)]:
        base, part = _QKV_PART.fullmatch(key).groups()
        groups.setdefault(base, {})[part] = state.pop(key)
    for base, parts in groups.items():
        if len(parts) == 3:
            state[base] = torch.cat([parts[part] for part in 'qkv'])
        else:
            conversion.unused.append(
                f'{base} (only the {"/".join(sorted(parts))} projection)')


def load_huggingface(
        path: str,
        hf_config: Optional[str] = None) -> Tuple[Dict[str, Tensor], dict]:
    """State dict and config of a HuggingFace checkpoint.

    Args:
        path: A model directory (``model.safetensors`` or
            ``pytorch_model.bin``) or one of those files.
        hf_config: Its ``config.json``; by default the one beside it.
    """
    path = Path(path)
    if path.is_dir():
        found = [
            path / name for name in ('model.safetensors', 'pytorch_model.bin')
            if (path / name).is_file()
        ]
        if not found:
            raise InputNotFoundError(f'{path} holds neither model.safetensors '
                                     'nor pytorch_model.bin')
        path = found[0]
    if not path.is_file():
        raise InputNotFoundError(f'checkpoint not found: {path}')
    config_path = Path(hf_config) if hf_config else path.parent / 'config.json'
    if not config_path.is_file():
        raise InputNotFoundError(
            f'HuggingFace config not found: {config_path} (its id2label '
            'decides the label mapping; pass --hf-config)')
    config = json.loads(config_path.read_text())
    if path.suffix == '.safetensors':
        state_dict = load_file(str(path))
    else:
        state_dict = load_checkpoint_file(str(path))
    require_format(str(path), state_dict, (HUGGINGFACE, ))
    return state_dict, config


def hf_default_config(hf_config: dict) -> str:
    """Our COCO config matching a HuggingFace config's backbone."""
    backbone = hf_config.get('backbone_config') or {}
    if backbone.get('model_type') == 'resnet':
        depth = resnet_depth(backbone['depths'])
    else:
        name = backbone.get('backbone') or hf_config.get(
            'backbone') or 'resnet50'
        match = re.fullmatch(r'resnet(\d+)', name)
        if match is None:
            raise CheckpointError(f'backbone {name!r} is not a ResNet; pass '
                                  '--config for its model')
        depth = int(match[1])
    return zoo_config(depth, dc5=bool(hf_config.get('dilation')))


def convert_huggingface(state_dict: Dict[str, Tensor],
                        id2label: Dict) -> Conversion:
    """Our names for a HuggingFace state dict; ``id2label`` (class name of
    each logit) maps the classifier onto mmdet's 80 COCO labels."""
    conversion = rename(state_dict, RULES)
    _pack_in_proj(conversion)
    conversion.notes.append(
        select_classifier_rows(conversion.state_dict,
                               rows_from_id2label(id2label)))
    return conversion
