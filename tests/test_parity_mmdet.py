"""MMDetection 3.3's built-in Conditional DETR (reached through the
``mmdet.`` scope) and ours are the same model under the same names: a
checkpoint of the built-in loads into ours as it is, and through
``tools/model_converters/mmdet_zoo2mmdet.py``, and both give the same
predictions.

mmdet's built-in decoder embeds the reference points with 128 features per
coordinate whatever the width (``coordinate_to_encoding``'s default), so it
only works at ``embed_dims=256``: the tiny model here has that width.
"""
import pytest
import torch
from conftest import (PARITY_TOL, assert_finite_training_step,
                      assert_same_detections, detections, load_converted,
                      parity_batch, randomize_, raw_predictions, run_tool,
                      write_tiny_coco_config)
from mmengine.config import Config

from mmdet_cdetr.converters import COCO_CLASSES
from mmdet_cdetr.models import ConditionalDETR
from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.torch_compat import load_weights_only


@pytest.fixture(scope='module')
def config_256(tmp_path_factory) -> str:
    return write_tiny_coco_config(
        tmp_path_factory.mktemp('config') / 'tiny_coco_256.py', embed_dims=256)


@pytest.fixture(scope='module')
def builtin(config_256, tmp_path_factory):
    """mmdet's built-in model with random weights, saved as mmdet's model
    zoo saves it."""
    cfg = Config.fromfile(config_256)
    cfg.model.type = 'mmdet.ConditionalDETR'
    cfg.model.bbox_head.type = 'mmdet.ConditionalDETRHead'
    model = MODELS.build(cfg.model)
    assert type(model).__module__.startswith('mmdet.')
    randomize_(model, seed=2)
    model.eval()
    path = tmp_path_factory.mktemp('mmdet') / 'conditional-detr_tiny.pth'
    torch.save(
        dict(
            meta=dict(epoch=50, dataset_meta=dict(classes=COCO_CLASSES)),
            state_dict=model.state_dict()), path)
    return dict(model=model, path=path)


def assert_matches_builtin(ours: torch.nn.Module,
                           builtin: torch.nn.Module) -> None:
    inputs, samples = parity_batch(ours)
    logits, boxes = raw_predictions(ours, inputs, samples)
    ref_logits, ref_boxes = raw_predictions(builtin, inputs, samples)
    assert logits.std() > 0.1 and boxes.std() > 0.05  # not degenerate
    assert (logits - ref_logits).abs().max() <= PARITY_TOL
    assert (boxes - ref_boxes).abs().max() <= PARITY_TOL
    assert_same_detections(
        detections(ours, inputs, samples), detections(builtin, inputs,
                                                      samples))


def test_builtin_checkpoint_loads_directly(builtin, config_256):
    ours = load_converted(config_256, builtin['path'])  # strict
    assert type(ours) is ConditionalDETR
    assert_matches_builtin(ours, builtin['model'])


def test_zoo_converter_passes_it_through(builtin, config_256, tmp_path):
    out = tmp_path / 'checked.pth'
    result = run_tool([
        'tools/model_converters/mmdet_zoo2mmdet.py',
        str(builtin['path']),
        str(out), '--config', config_256
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'unused source keys: 0' in result.stdout
    assert 'unfilled model keys: 0' in result.stdout
    converted = load_weights_only(out)['state_dict']
    source = builtin['model'].state_dict()
    assert list(converted) == list(source)
    assert all(torch.equal(converted[key], source[key]) for key in source)
    assert_matches_builtin(load_converted(config_256, out), builtin['model'])


def test_training_step_on_builtin_weights(builtin, config_256):
    assert_finite_training_step(load_converted(config_256, builtin['path']))
