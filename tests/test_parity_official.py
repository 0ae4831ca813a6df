"""Checkpoints of the official repository (Atten4Vis/ConditionalDETR)
convert to the same model.

The official code needs torchvision, which cannot be installed here, so the
official checkpoint is written from the HuggingFace reference's weights
under the names of the official ``models/transformer.py``,
``models/conditional_detr.py`` and torchvision's ResNet (HuggingFace's
``convert_conditional_detr_original_pytorch_checkpoint_to_pytorch.py``
renames in the other direction), with the training extras the official
``main.py`` saves. The converted model must compute what the HuggingFace
model computes, and ``tools/test.py`` must evaluate it.
"""
import argparse
import json
import re

import pytest
import torch
from conftest import (HUB_BACKBONE, assert_matches_hf,
                      hf_resnet_to_torchvision, load_converted, run_tool,
                      write_tiny_coco_config)
from safetensors.torch import load_file

from mmdet_cdetr.converters import COCO_CATEGORY_IDS, COCO_CLASSES
from mmdet_cdetr.utils.torch_compat import load_weights_only

# hub (HuggingFace) name -> official name, applied in order
OFFICIAL_NAMES = [
    (r'model\.input_projection\.', 'input_proj.'),
    (r'model\.query_position_embeddings\.', 'query_embed.'),
    (r'model\.(encoder|decoder)\.layers\.', r'transformer.\1.layers.'),
    (r'model\.decoder\.layernorm\.', 'transformer.decoder.norm.'),
    (r'model\.decoder\.', 'transformer.decoder.'),
    (r'\.encoder_attn\.out_proj\.', '.cross_attn.out_proj.'),
    (r'\.fc([12])\.', r'.linear\1.'),
    (r'(encoder\.layers\.\d+)\.final_layer_norm\.', r'\1.norm2.'),
    (r'(decoder\.layers\.\d+)\.final_layer_norm\.', r'\1.norm3.'),
    (r'\.self_attn_layer_norm\.', '.norm1.'),
    (r'\.encoder_attn_layer_norm\.', '.norm2.'),
    (r'class_labels_classifier\.', 'class_embed.'),
    (r'bbox_predictor\.', 'bbox_embed.'),
]


def official_state(hub: dict) -> dict:
    """The official layout of a hub-layout state dict: torchvision ResNet
    under ``backbone.0.body``, encoder q/k/v packed as
    ``nn.MultiheadAttention.in_proj_*``."""
    state, packed = {}, {}
    for key, value in hub.items():
        if key.startswith(HUB_BACKBONE):
            name = hf_resnet_to_torchvision(key[len(HUB_BACKBONE):])
            state[f'backbone.0.body.{name}'] = value
            continue
        for pattern, replacement in OFFICIAL_NAMES:
            key = re.sub(pattern, replacement, key)
        match = re.fullmatch(r'(.+self_attn)\.([qkv])_proj\.(weight|bias)',
                             key)
        if match:
            packed.setdefault(f'{match[1]}.in_proj_{match[3]}',
                              {})[match[2]] = value
        else:
            state[key] = value
    for key, parts in packed.items():
        state[key] = torch.cat([parts['q'], parts['k'], parts['v']])
    return state


@pytest.fixture(scope='module')
def official(hf_reference, tiny_coco_config, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('official')
    state = official_state(
        load_file(str(hf_reference.dir / 'model.safetensors')))
    src = tmp / 'ConditionalDETR_tiny_epoch50.pth'
    torch.save(
        dict(
            model=state,
            optimizer=dict(state={}, param_groups=[dict(lr=1e-4)]),
            lr_scheduler=dict(step_size=40, last_epoch=50),
            epoch=49,
            args=argparse.Namespace(backbone='resnet50', dilation=False)), src)
    out = tmp / 'converted.pth'
    result = run_tool([
        'tools/model_converters/official2mmdet.py',
        str(src),
        str(out), '--config', tiny_coco_config
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(state=state, src=src, out=out, log=result.stdout, tmp=tmp)


def test_official_names(official):
    """The layout follows the official model code (spot checks)."""
    state = official['state']
    for key in ('backbone.0.body.layer1.0.downsample.1.running_mean',
                'input_proj.weight', 'query_embed.weight',
                'transformer.encoder.layers.1.self_attn.in_proj_weight',
                'transformer.encoder.layers.1.norm2.bias',
                'transformer.decoder.layers.0.ca_qpos_proj.weight',
                'transformer.decoder.layers.1.ca_qpos_sine_proj.bias',
                'transformer.decoder.layers.1.sa_kpos_proj.weight',
                'transformer.decoder.layers.1.cross_attn.out_proj.weight',
                'transformer.decoder.layers.1.norm3.weight',
                'transformer.decoder.norm.weight',
                'transformer.decoder.query_scale.layers.1.weight',
                'transformer.decoder.ref_point_head.layers.0.bias',
                'class_embed.weight', 'bbox_embed.layers.2.bias'):
        assert key in state, key
    # only the first decoder layer has a query-position projection
    assert 'transformer.decoder.layers.1.ca_qpos_proj.weight' not in state
    assert state['class_embed.weight'].shape[0] == 91


def test_conversion_is_complete(official):
    assert 'unused source keys: 0' in official['log']
    assert 'unfilled model keys: 0' in official['log']
    ckpt = load_weights_only(official['out'])
    # mmdet label i <- official logit of COCO category id
    weight = official['state']['class_embed.weight']
    for label, name, category_id in ((0, 'person', 1), (11, 'stop sign', 13),
                                     (60, 'dining table',
                                      67), (79, 'toothbrush', 90)):
        assert COCO_CLASSES[label] == name
        assert COCO_CATEGORY_IDS[label] == category_id
        assert torch.equal(
            ckpt['state_dict']['bbox_head.fc_cls.weight'][label],
            weight[category_id])


def test_matches_huggingface(official, hf_reference, tiny_coco_config):
    ours = load_converted(tiny_coco_config, official['out'])
    assert_matches_hf(ours, hf_reference.model)


def _coco80_annotations(synthetic_root: str, out: str) -> None:
    """The synthetic validation set with COCO's 80 categories (its shapes
    become the first three), so an 80-class model evaluates on it."""
    with open(f'{synthetic_root}/annotations/instances_val.json') as f:
        data = json.load(f)
    data['categories'] = [
        dict(id=category_id, name=name)
        for category_id, name in zip(COCO_CATEGORY_IDS, COCO_CLASSES)
    ]
    for ann in data['annotations']:
        ann['category_id'] = COCO_CATEGORY_IDS[ann['category_id'] - 1]
    with open(out, 'w') as f:
        json.dump(data, f)


def test_converted_checkpoint_evaluates_with_test_tool(official,
                                                       synthetic_root):
    ann = str(official['tmp'] / 'instances_val_coco80.json')
    _coco80_annotations(synthetic_root, ann)
    config = write_tiny_coco_config(
        official['tmp'] / 'eval.py', f"""
test_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(
        data_root='{synthetic_root}/', ann_file='{ann}',
        data_prefix=dict(img='val/'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(128, 128), keep_ratio=True),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='PackDetInputs', meta_keys=(
                'img_id', 'img_path', 'ori_shape', 'img_shape',
                'scale_factor'))]))
test_evaluator = dict(ann_file='{ann}')
""")
    result = run_tool([
        'tools/test.py', config,
        str(official['out']), '--eval', 'bbox', '--work-dir',
        str(official['tmp'] / 'test')
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert 'coco/bbox_mAP' in output
    assert 'Load checkpoint from' in output
    for warning in ('do not match exactly', 'missing keys', 'unexpected key'):
        assert warning not in output
