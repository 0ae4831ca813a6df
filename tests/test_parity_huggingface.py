"""Our model with converted HuggingFace weights computes what
``transformers``' ConditionalDetrForObjectDetection computes.

The reference (``hf_reference`` in conftest) is a random-weight HuggingFace
model with its own ResNet and 91 logits named by a COCO ``id2label``, saved
with ``save_pretrained``. Converted by
``tools/model_converters/huggingface2mmdet.py`` (or its functions), both
run on a batch of two images of different sizes.
"""
import json

import pytest
import torch
from conftest import (HUB_BACKBONE, TRANSFORMERS_4,
                      assert_finite_training_step, assert_matches_hf,
                      hf_resnet_to_torchvision, load_converted, run_tool)
from safetensors.torch import load_file

from mmdet_cdetr.converters import (COCO_CLASSES, convert_huggingface, finish,
                                    load_huggingface)

CONVERTER = 'tools/model_converters/huggingface2mmdet.py'


@pytest.fixture(scope='module')
def converted(hf_reference, tiny_coco_config, tmp_path_factory):
    """The hub-layout directory converted by the command line."""
    out = tmp_path_factory.mktemp('converted') / 'hf.pth'
    result = run_tool([
        CONVERTER,
        str(hf_reference.dir),
        str(out), '--config', tiny_coco_config
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(path=out, log=result.stdout)


def test_cli_reports_a_complete_conversion(converted):
    assert 'unused source keys: 0' in converted['log']
    assert 'unfilled model keys: 0' in converted['log']
    assert 'classifier: 91 logits -> 80 COCO labels' in converted['log']
    ckpt = torch.load(converted['path'], weights_only=True)
    assert ckpt['meta']['dataset_meta']['classes'] == COCO_CLASSES
    assert ckpt['meta']['converted_from']['kind'] == 'huggingface'


def test_hf_resnet_layout_safetensors(converted, hf_reference,
                                      tiny_coco_config):
    ours = load_converted(tiny_coco_config, converted['path'])
    assert_matches_hf(ours, hf_reference.model)


def _convert_file(src, hf_dir, config, out, allow_partial=False):
    """Convert in-process (the command line is tested once above)."""
    state_dict, hf_config = load_huggingface(
        str(src), str(hf_dir / 'config.json'))
    conversion = convert_huggingface(state_dict, hf_config['id2label'])
    return finish(conversion, config, str(out), {}, allow_partial)


@pytest.mark.skipif(
    TRANSFORMERS_4,
    reason="transformers 4's in-memory names are the hub's (tested above)")
def test_transformers5_names_bin(hf_reference, tiny_coco_config, tmp_path):
    """``torch.save(model.state_dict())`` under transformers >= 5, whose
    in-memory names differ from the hub's, as ``.bin``."""
    state = hf_reference.model.state_dict()
    assert any('.mlp.fc1.' in key for key in state)
    torch.save(state, tmp_path / 'pytorch_model.bin')
    report = _convert_file(tmp_path / 'pytorch_model.bin', hf_reference.dir,
                           tiny_coco_config, tmp_path / 'out.pth')
    assert report.complete and not report.unused
    assert_matches_hf(
        load_converted(tiny_coco_config, tmp_path / 'out.pth'),
        hf_reference.model)


def _timm_name(key: str) -> str:
    if not key.startswith(HUB_BACKBONE):
        return key
    return HUB_BACKBONE + hf_resnet_to_torchvision(key[len(HUB_BACKBONE):])


def test_hub_timm_layout_bin(hf_reference, tiny_coco_config, tmp_path):
    """The hub's layout (timm ResNet backbone; timm cannot be installed
    here), written from the reference weights with torchvision's names."""
    hub = load_file(str(hf_reference.dir / 'model.safetensors'))
    timm_state = {_timm_name(key): value for key, value in hub.items()}
    for key in ('layer4.2.bn3.running_var', 'layer1.0.downsample.0.weight',
                'bn1.weight', 'layer3.5.conv2.weight'):
        assert f'{HUB_BACKBONE}{key}' in timm_state
    model_dir = tmp_path / 'hub'
    model_dir.mkdir()
    torch.save(timm_state, model_dir / 'pytorch_model.bin')
    config = json.loads((hf_reference.dir / 'config.json').read_text())
    (model_dir / 'config.json').write_text(json.dumps(config))
    report = _convert_file(model_dir, model_dir, tiny_coco_config,
                           tmp_path / 'out.pth')
    assert report.complete and not report.unused
    assert_matches_hf(
        load_converted(tiny_coco_config, tmp_path / 'out.pth'),
        hf_reference.model)


def test_training_step_on_converted_weights(converted, tiny_coco_config):
    assert_finite_training_step(
        load_converted(tiny_coco_config, converted['path']))


def test_partial_checkpoint_is_refused(hf_reference, tiny_coco_config,
                                       tmp_path):
    hub = load_file(str(hf_reference.dir / 'model.safetensors'))
    del hub['model.decoder.layers.1.ca_qpos_sine_proj.weight']
    src = tmp_path / 'pytorch_model.bin'
    torch.save(hub, src)
    out = tmp_path / 'partial.pth'
    result = run_tool([
        CONVERTER,
        str(src),
        str(out), '--config', tiny_coco_config, '--hf-config',
        str(hf_reference.dir / 'config.json')
    ])
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: refusing to write a partial checkpoint')
    assert 'decoder.layers.1.cross_attn.qpos_sine_proj.weight' in last
    assert not out.exists()
    report = _convert_file(
        src, hf_reference.dir, tiny_coco_config, out, allow_partial=True)
    assert report.unfilled == [
        'decoder.layers.1.cross_attn.qpos_sine_proj.weight'
    ]
    assert out.is_file()
