"""Our model with converted HuggingFace weights computes what
``transformers``' ConditionalDetrForObjectDetection computes.

The reference is a random-weight HuggingFace model with its own ResNet (a
bottleneck ResNet-50 of 1/8 width, which mmdet's ``ResNet(depth=50,
base_channels=8)`` mirrors) and 91 logits named by a COCO ``id2label``.
It is saved with ``save_pretrained`` (the hub's names), converted with
``tools/model_converters/huggingface2mmdet.py`` and compared on a batch of
two images of different sizes.
"""
import json
import pytest
import torch
from conftest import (assert_finite_training_step, assert_same_detections,
                      detections, parity_batch, randomize_, raw_predictions,
                      run_tool, write_tiny_coco_config)
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmengine.structures import InstanceData
from safetensors.torch import load_file
from types import SimpleNamespace

from mmdet_cdetr.converters import COCO_CATEGORY_IDS, COCO_CLASSES
from mmdet_cdetr.registry import MODELS

transformers = pytest.importorskip('transformers')

TOL = 1e-4


def coco_id2label() -> dict:
    """HuggingFace's COCO labels: one per category id, 'N/A' in the gaps."""
    id2label = {i: 'N/A' for i in range(91)}
    id2label.update(zip(COCO_CATEGORY_IDS, COCO_CLASSES))
    return id2label


def tiny_hf_config():
    backbone = transformers.ResNetConfig(
        embedding_size=8,
        hidden_sizes=[32, 64, 128, 256],
        depths=[3, 4, 6, 3],
        layer_type='bottleneck',
        out_features=['stage4'])
    id2label = coco_id2label()
    return transformers.ConditionalDetrConfig(
        backbone_config=backbone,
        use_timm_backbone=False,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        num_queries=30,
        id2label=id2label,
        label2id={name: i
                  for i, name in id2label.items()})


@pytest.fixture(scope='module')
def hf_model(tmp_path_factory):
    """The reference model, saved as on the hub (HuggingFace ResNet)."""
    torch.manual_seed(0)
    model = transformers.ConditionalDetrForObjectDetection(tiny_hf_config())
    randomize_(model, seed=1)
    model.eval()
    out_dir = tmp_path_factory.mktemp('hf') / 'model'
    model.save_pretrained(out_dir)
    return SimpleNamespace(model=model, dir=out_dir)


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    return write_tiny_coco_config(
        tmp_path_factory.mktemp('cfg') / 'tiny_coco.py')


def convert(src, dst, config, *extra):
    result = run_tool([
        'tools/model_converters/huggingface2mmdet.py',
        str(src),
        str(dst), '--config', config, *extra
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def load_ours(config: str, checkpoint) -> torch.nn.Module:
    model = MODELS.build(Config.fromfile(config).model)
    load_checkpoint(model, str(checkpoint), strict=True)
    return model.eval()


def hf_predictions(hf, inputs, samples):
    mask = torch.zeros(inputs.shape[0], *inputs.shape[-2:], dtype=torch.long)
    for i, sample in enumerate(samples):
        h, w = sample.img_shape
        mask[i, :h, :w] = 1
    with torch.no_grad():
        return hf(pixel_values=inputs, pixel_mask=mask)


def hf_detections(outputs, samples) -> list:
    """HuggingFace's own post-processing (top-100 sigmoid scores) on the
    logits of the 80 COCO classes; boxes clamped to the image as mmdet
    does (HuggingFace and the official repository do not clamp)."""
    processor = transformers.ConditionalDetrImageProcessorPil()
    columns = torch.tensor(COCO_CATEGORY_IDS)
    sizes = [sample.img_shape for sample in samples]
    results = processor.post_process_object_detection(
        SimpleNamespace(
            logits=outputs.logits[..., columns],
            pred_boxes=outputs.pred_boxes),
        threshold=0.,
        target_sizes=sizes,
        top_k=100)
    dets = []
    for result, (h, w) in zip(results, sizes):
        boxes = result['boxes'].clone()
        boxes[:, 0::2].clamp_(0, w)
        boxes[:, 1::2].clamp_(0, h)
        dets.append(
            InstanceData(
                labels=result['labels'], scores=result['scores'],
                bboxes=boxes))
    return dets


def assert_parity(ours, hf):
    inputs, samples = parity_batch(ours)
    logits, boxes = raw_predictions(ours, inputs, samples)
    reference = hf_predictions(hf, inputs, samples)
    # our label i is the logit of COCO category COCO_CATEGORY_IDS[i]
    ref_logits = reference.logits[..., list(COCO_CATEGORY_IDS)]
    assert logits.std() > 0.1 and 0.05 < boxes.std()  # not degenerate
    assert (logits - ref_logits).abs().max() <= TOL
    assert (boxes - reference.pred_boxes).abs().max() <= TOL
    assert_same_detections(
        detections(ours, inputs, samples), hf_detections(reference, samples))


def test_hf_resnet_layout_safetensors(hf_model, tiny_config, tmp_path):
    out = tmp_path / 'converted.pth'
    result = convert(hf_model.dir, out, tiny_config)
    assert 'unused source keys: 0' in result.stdout
    assert 'unfilled model keys: 0' in result.stdout
    assert 'classifier: 91 logits -> 80 COCO labels' in result.stdout
    ckpt = torch.load(out, weights_only=True)
    assert ckpt['meta']['dataset_meta']['classes'] == COCO_CLASSES
    assert_parity(load_ours(tiny_config, out), hf_model.model)


def test_transformers5_names_bin(hf_model, tiny_config, tmp_path):
    """A ``torch.save(model.state_dict())`` of transformers >= 5 (its
    in-memory names differ from the hub's) as ``.bin``."""
    src = tmp_path / 'pytorch_model.bin'
    torch.save(hf_model.model.state_dict(), src)
    assert any('.mlp.fc1.' in key for key in hf_model.model.state_dict())
    out = tmp_path / 'converted.pth'
    convert(src, out, tiny_config, '--hf-config',
            str(hf_model.dir / 'config.json'))
    assert_parity(load_ours(tiny_config, out), hf_model.model)


def _hf_resnet_to_timm(key: str) -> str:
    """The hub's timm ResNet names the parameters as torchvision does:
    ``conv1``/``bn1`` stem, ``layer{S}.{B}.conv{K}``/``bn{K}`` with S and K
    counted from 1, ``downsample.0`` (conv) and ``downsample.1`` (norm)."""
    prefix = 'model.backbone.conv_encoder.model.'
    name = key[len(prefix):]
    if name.startswith('embedder.embedder.'):
        name = name.replace('embedder.embedder.convolution', 'conv1')
        name = name.replace('embedder.embedder.normalization', 'bn1')
        return prefix + name
    _, _, stage, _, block, kind, *rest = name.split('.')
    stage_name = f'layer{int(stage) + 1}.{block}.'
    if kind == 'shortcut':
        index = '0' if rest[0] == 'convolution' else '1'
        return prefix + stage_name + f'downsample.{index}.{rest[1]}'
    conv, module, param = rest
    kind = 'conv' if module == 'convolution' else 'bn'
    return prefix + stage_name + f'{kind}{int(conv) + 1}.{param}'


def test_hub_timm_layout_bin(hf_model, tiny_config, tmp_path):
    """The hub's layout (timm ResNet backbone, which cannot be installed
    here) written from the reference weights with torchvision's names."""
    hub = load_file(str(hf_model.dir / 'model.safetensors'))
    timm_state = {
        _hf_resnet_to_timm(key) if '.backbone.' in key else key: value
        for key, value in hub.items()
    }
    assert 'model.backbone.conv_encoder.model.layer4.2.bn3.running_var' in (
        timm_state)
    assert ('model.backbone.conv_encoder.model.layer1.0.downsample.0.weight'
            in timm_state)
    model_dir = tmp_path / 'hub'
    model_dir.mkdir()
    torch.save(timm_state, model_dir / 'pytorch_model.bin')
    config = json.loads((hf_model.dir / 'config.json').read_text())
    (model_dir / 'config.json').write_text(json.dumps(config))
    out = tmp_path / 'converted.pth'
    result = convert(model_dir, out, tiny_config)
    assert 'unused source keys: 0' in result.stdout
    assert_parity(load_ours(tiny_config, out), hf_model.model)


def test_training_step_on_converted_weights(hf_model, tiny_config, tmp_path):
    out = tmp_path / 'converted.pth'
    convert(hf_model.dir, out, tiny_config)
    assert_finite_training_step(load_ours(tiny_config, out))


def test_partial_checkpoint_is_refused(hf_model, tiny_config, tmp_path):
    hub = load_file(str(hf_model.dir / 'model.safetensors'))
    dropped = 'model.decoder.layers.1.ca_qpos_sine_proj.weight'
    del hub[dropped]
    src = tmp_path / 'pytorch_model.bin'
    torch.save(hub, src)
    out = tmp_path / 'partial.pth'
    args = [
        'tools/model_converters/huggingface2mmdet.py',
        str(src),
        str(out), '--config', tiny_config, '--hf-config',
        str(hf_model.dir / 'config.json')
    ]
    result = run_tool(args)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert 'refusing to write a partial checkpoint' in result.stderr
    assert 'decoder.layers.1.cross_attn.qpos_sine_proj.weight' in (
        result.stderr)
    assert not out.exists()
    result = run_tool(args + ['--allow-partial'])
    assert result.returncode == 0, result.stderr[-3000:]
    assert ('unfilled model keys: 1: '
            'decoder.layers.1.cross_attn.qpos_sine_proj.weight') in (
                result.stdout)
    assert out.is_file()
