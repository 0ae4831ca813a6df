"""With ``batch_independent_inference`` (on in our configs) every test
image gets the detections it gets alone, whatever else is in its batch."""
import numpy as np
import pytest
import torch
from conftest import build_model
from mmdet.structures import DetDataSample

from mmdet_cdetr.datasets.synthetic_coco import make_image

SHAPES = ((96, 128), (128, 96), (64, 160), (112, 112))


def _images(shapes):
    """Synthetic uint8 images (3, H, W) of the given shapes."""
    rng = np.random.default_rng(7)
    images = []
    for height, width in shapes:
        image, _ = make_image(rng, max(height, width), 3, 0.2, 0.5, 0)
        images.append(
            torch.from_numpy(image[:height, :width]).permute(2, 0, 1))
    return images


def _batch(model, images):
    inputs, samples = [], []
    for image in images:
        height, width = image.shape[1:]
        inputs.append(image)
        samples.append(
            DetDataSample(
                metainfo=dict(
                    img_shape=(height, width),
                    ori_shape=(height, width),
                    scale_factor=(1., 1.))))
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), False)
    return data['inputs'], data['data_samples']


def _predict(model, images):
    inputs, samples = _batch(model, images)
    with torch.no_grad():
        return [s.pred_instances for s in model.predict(inputs, samples)]


@pytest.mark.parametrize('independent', [True, False])
def test_batch_of_four_gives_each_image_its_own_detections(independent):
    model = build_model(1).eval()
    model.batch_independent_inference = independent
    images = _images(SHAPES)
    batched = _predict(model, images)
    alone = [_predict(model, [image])[0] for image in images]
    box_gap = max((b.bboxes - a.bboxes).abs().max().item()
                  for b, a in zip(batched, alone))
    score_gap = max((b.scores - a.scores).abs().max().item()
                    for b, a in zip(batched, alone))
    if independent:
        for b, a in zip(batched, alone):
            assert torch.equal(b.labels, a.labels)
        assert box_gap <= 0.01 and score_gap <= 1e-5
    else:  # mmdet's way: the padding changes the other images' results
        assert box_gap > 0.01 or score_gap > 1e-5


def test_same_size_batches_take_mmdets_path():
    model = build_model(1).eval()
    model.batch_independent_inference = True
    inputs, samples = _batch(model, _images([(96, 96), (96, 96)]))
    with torch.no_grad():
        model.predict(inputs, samples)
    assert all('feat_valid_shape' not in s.metainfo for s in samples)


def test_benchmark_prices_batch_independence_on_mixed_sizes(tmp_path):
    import json

    from conftest import R50_CONFIG, run_tool
    out = tmp_path / 'bench.json'
    result = run_tool([
        'tools/analysis_tools/benchmark.py', R50_CONFIG, '--shape', '96',
        '128', '--batch-size', '3', '--mixed-sizes', '--max-iter', '1',
        '--num-warmup', '0', '--threads', '1', '--out',
        str(out)
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(json.loads(out.read_text())['seconds'])
    assert rows == [
        'pytorch', 'pytorch (batch-dependent)', 'pytorch (no speed-ups)'
    ]
    assert '| pytorch (batch-dependent) | ' in result.stdout


def test_mixed_size_benchmark_batch_pads_smaller_images():
    from mmdet_cdetr.analysis.benchmark import make_batch
    model = build_model()
    inputs, samples = make_batch(
        model, 3, (96, 128), 2, 80, False, mixed_sizes=True)
    assert tuple(inputs.shape[2:]) == (96, 128)
    assert [s.img_shape for s in samples] == [(96, 128), (84, 112), (72, 96)]
