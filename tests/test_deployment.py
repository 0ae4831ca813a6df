"""Export to ONNX and inference with ONNX Runtime: detections equal to
PyTorch's at two image sizes from one exported file, the same COCO AP
through the tools, and clear errors for bad input."""
import json
import os.path as osp
import pickle
import re
import shutil
import statistics

import numpy as np
import pytest
import torch
from conftest import (QUICK_CONFIG, assert_clean_error, build_quick_model,
                      quick_cfg, randomize_, run_tool)

from mmdet_cdetr.deployment import (OrtRunner, compare_detections, export_onnx,
                                    random_image)
from mmdet_cdetr.registry import MODELS

pytest.importorskip('onnxruntime')

# Traced at the first size; the second differs in both dimensions and in
# aspect ratio, so any shape frozen into the graph shows.
EXPORT_SHAPE, OTHER_SHAPE = (128, 128), (96, 160)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """The quick-start model with random weights that spread its scores,
    and its export traced at ``EXPORT_SHAPE``."""
    model = build_quick_model().eval()
    randomize_(model, seed=2)
    path = tmp_path_factory.mktemp('onnx') / 'quick.onnx'
    export_onnx(model, str(path), EXPORT_SHAPE)
    return model, str(path)


@pytest.mark.parametrize('shape', [EXPORT_SHAPE, OTHER_SHAPE])
def test_onnxruntime_equals_pytorch(exported, shape):
    model, path = exported
    inputs, sample = random_image(model, shape, seed=shape[1])
    with torch.no_grad():
        pred = model.predict(inputs, [sample], rescale=False)[0].pred_instances
    dets, labels = OrtRunner(path)(inputs)
    # max_per_img (100), or all 20 queries x 3 classes when fewer
    k = min(model.bbox_head.test_cfg.max_per_img, 20 * 3)
    assert dets.shape == (1, k, 5) and dets.dtype == np.float32
    assert labels.shape == (1, k) and labels.dtype == np.int64
    assert pred.scores.std() > 0.01  # scores spread: the order means something
    assert torch.equal(torch.from_numpy(labels[0]), pred.labels)
    assert np.abs(dets[0, :, 4] - pred.scores.numpy()).max() <= 1e-4
    assert np.abs(dets[0, :, :4] - pred.bboxes.numpy()).max() <= 0.05
    # boxes in input pixels, clipped to the image
    height, width = shape
    assert dets[0, :, :4].min() >= 0
    assert dets[0, :, 0::2].max() <= width and dets[0, :, 1::2].max() <= height
    diffs = compare_detections((pred.bboxes, pred.scores, pred.labels),
                               (dets, labels))
    assert diffs['labels'] == 0 and diffs['boxes_px'] <= 0.05


def test_batch_of_two_sizes_equals_each_image_alone(exported, tmp_path):
    """One batched file, a padded batch of images of different sizes (and
    another batch size than traced): each image gets the detections that
    PyTorch gives it alone."""
    model, _ = exported
    path = str(tmp_path / 'batched.onnx')
    export_onnx(model, path, EXPORT_SHAPE, batch_size=2)
    runner = OrtRunner(path)
    assert runner.batched
    for shapes in ((EXPORT_SHAPE, OTHER_SHAPE), (OTHER_SHAPE, (72, 100),
                                                 EXPORT_SHAPE)):
        images = [random_image(model, s, seed=i) for i, s in enumerate(shapes)]
        batch = torch.zeros(len(shapes), 3, 128, 160)
        for i, (inputs, _) in enumerate(images):
            batch[i, :, :inputs.shape[2], :inputs.shape[3]] = inputs[0]
        dets, labels = runner(batch, shapes)
        for i, (inputs, sample) in enumerate(images):
            sample.set_metainfo(dict(batch_input_shape=inputs.shape[2:]))
            with torch.no_grad():
                pred = model.predict(inputs, [sample])[0].pred_instances
            assert torch.equal(torch.from_numpy(labels[i]), pred.labels)
            assert np.abs(dets[i, :, 4] - pred.scores.numpy()).max() <= 1e-4
            assert np.abs(dets[i, :, :4] - pred.bboxes.numpy()).max() <= 0.05
    with pytest.raises(ValueError, match='takes one image, no sizes'):
        OrtRunner(exported[1])(batch[:1], [EXPORT_SHAPE])


def test_compare_detections_finds_a_wrong_label(exported):
    model, path = exported
    inputs, sample = random_image(model, EXPORT_SHAPE)
    with torch.no_grad():
        pred = model.predict(inputs, [sample], rescale=False)[0].pred_instances
    dets, labels = OrtRunner(path)(inputs)
    labels[0, 0] = (labels[0, 0] + 1) % model.bbox_head.num_classes
    dets[0, 1, 0] += 1.
    diffs = compare_detections((pred.bboxes, pred.scores, pred.labels),
                               (dets, labels))
    assert diffs['labels'] >= 1 and diffs['boxes_px'] >= 0.99


def test_compare_detections_counts_ties_of_an_untrained_model():
    """Every score at the prior: nothing can be matched by rank, and the
    count says so instead of reporting a box difference."""
    boxes = torch.rand(5, 4) * 50
    scores, labels = torch.full((5, ), 0.01), torch.tensor([0, 1, 2, 0, 1])
    exported = (torch.cat([boxes.flip(0), scores[:, None]],
                          1)[None].numpy(), labels.flip(0)[None].numpy())
    diffs = compare_detections((boxes, scores, labels), exported)
    assert diffs['boundary_ties'] == diffs['detections'] == 5
    assert diffs['labels'] == 0 and diffs['boxes_px'] == 0


def test_exported_file_records_classes_and_io(exported):
    import onnx
    _, path = exported
    model = onnx.load(path)
    meta = {prop.key: prop.value for prop in model.metadata_props}
    assert meta['num_classes'] == '3' and meta['max_per_img'] == '100'
    (graph_input, ) = model.graph.input
    dims = [
        d.dim_param or d.dim_value
        for d in graph_input.type.tensor_type.shape.dim
    ]
    assert graph_input.name == 'input' and dims[:2] == [1, 3]
    assert all(isinstance(d, str) for d in dims[2:])  # dynamic H and W
    assert [out.name for out in model.graph.output] == ['dets', 'labels']


def test_simplified_export_keeps_io_and_detections(exported, tmp_path):
    import onnx
    model, path = exported
    simplified = str(tmp_path / 'quick_simplified.onnx')
    export_onnx(model, simplified, EXPORT_SHAPE, simplify=True)
    plain_graph, slim_graph = onnx.load(path), onnx.load(simplified)
    assert len(slim_graph.graph.node) < len(plain_graph.graph.node)
    assert slim_graph.metadata_props == plain_graph.metadata_props
    for shape in (EXPORT_SHAPE, OTHER_SHAPE):
        inputs, _ = random_image(model, shape, seed=shape[0])
        dets, labels = OrtRunner(path)(inputs)
        slim_dets, slim_labels = OrtRunner(simplified)(inputs)
        assert np.array_equal(slim_labels, labels)
        assert np.abs(slim_dets - dets).max() <= 1e-4


def test_runner_rejects_bad_input(exported, tmp_path):
    _, path = exported
    runner = OrtRunner(path)
    with pytest.raises(ValueError, match=r'input of shape \(3, 64, 64\)'):
        runner(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(FileNotFoundError, match='ONNX file not found'):
        OrtRunner(str(tmp_path / 'missing.onnx'))
    text = tmp_path / 'notes.onnx'
    text.write_text('not a model')
    with pytest.raises(ValueError, match='is not a valid ONNX model'):
        OrtRunner(str(text))


def test_tools_export_evaluate_and_match_pytorch(trained):
    """pytorch2onnx.py, then test_onnx.py and test.py on the synthetic
    val set: the same AP and the same detections in original pixels."""
    tmp, config = trained['tmp'], trained['config']
    checkpoint = str(trained['work_dir'] / 'epoch_2.pth')
    onnx_file = str(tmp / 'tiny.onnx')
    result = run_tool([
        'tools/deployment/pytorch2onnx.py', config, checkpoint, '--out',
        onnx_file, '--shape', '128', '128'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'ONNX Runtime matches PyTorch (128x128' in result.stdout

    runs = {}
    for name, tool, model in (('onnx', 'tools/deployment/test_onnx.py',
                               onnx_file), ('pytorch', 'tools/test.py',
                                            checkpoint)):
        out = tmp / f'{name}.pkl'
        args = [
            tool, config, model, '--eval', 'bbox', '--out',
            str(out), '--work-dir',
            str(tmp / f'test_{name}')
        ]
        if name == 'onnx':
            args += ['--show-dir', 'vis']
        result = run_tool(args)
        assert result.returncode == 0, result.stderr[-3000:]
        ap = float(re.search(r'coco/bbox_mAP: ([0-9.]+)', result.stdout)[1])
        with open(out, 'rb') as f:
            runs[name] = (ap, pickle.load(f))
    ap_onnx, dets_onnx = runs['onnx']
    ap_torch, dets_torch = runs['pytorch']
    assert abs(ap_onnx - ap_torch) <= 0.001
    assert len(dets_onnx) == len(dets_torch) == 16
    for ours, ref in zip(dets_onnx, dets_torch):
        assert ours['img_id'] == ref['img_id']
        ours, ref = ours['pred_instances'], ref['pred_instances']
        assert (ours['scores'] - ref['scores']).abs().max() <= 1e-4
        # A barely trained model has queries with tied scores, which may
        # come out in either order: compared as ties.
        exported = (torch.cat([ours['bboxes'], ours['scores'][:, None]],
                              1)[None].numpy(), ours['labels'][None].numpy())
        diffs = compare_detections(
            (ref['bboxes'], ref['scores'], ref['labels']), exported)
        assert diffs['labels'] == 0 and diffs['boxes_px'] <= 0.05
    drawn = list((tmp / 'test_onnx').glob('*/vis/*.png'))
    assert len(drawn) == 16

    # A batched export (into a folder that does not exist yet): the same AP
    # and detections at batch 4 as the batch-1 file's.
    batched = str(tmp / 'new_dir' / 'tiny_b4.onnx')
    result = run_tool([
        'tools/deployment/pytorch2onnx.py', config, checkpoint, '--out',
        batched, '--shape', '128', '128', '--batch-size', '4'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'matches PyTorch (one batch of 4)' in result.stdout
    out = tmp / 'onnx_b4.pkl'
    result = run_tool([
        'tools/deployment/test_onnx.py', config, batched, '--eval', 'bbox',
        '--batch-size', '4', '--out',
        str(out), '--work-dir',
        str(tmp / 'test_onnx_b4')
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    ap_batched = float(
        re.search(r'coco/bbox_mAP: ([0-9.]+)', result.stdout)[1])
    assert ap_batched == ap_onnx
    with open(out, 'rb') as f:
        dets_batched = pickle.load(f)
    for ours, ref in zip(dets_batched, dets_onnx):
        assert ours['img_id'] == ref['img_id']
        ours, ref = ours['pred_instances'], ref['pred_instances']
        assert (ours['scores'] - ref['scores']).abs().max() <= 1e-4

    # image_demo.py runs the .onnx file: PyTorch's detections, drawn
    image = dets_torch[0]['img_path']
    images = tmp / 'demo_images'
    images.mkdir()
    shutil.copy(image, images)
    result = run_tool([
        'tools/image_demo.py',
        str(images), config, '--weights', onnx_file, '--out-dir',
        str(tmp / 'demo'), '--device', 'cpu'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    name = osp.basename(image)
    assert (tmp / 'demo' / 'vis' / name).stat().st_size > 1000
    preds = json.loads(
        (tmp / 'demo' / 'preds' / f'{osp.splitext(name)[0]}.json').read_text())
    ref = dets_torch[0]['pred_instances']
    assert np.abs(np.array(preds['scores']) -
                  ref['scores'].numpy()).max() <= 1e-4


def test_onnxruntime_detector_refuses_another_class_count(exported):
    from mmdet_cdetr.deployment import (ONNXRuntimeDetector,
                                        onnxruntime_detector_cfg)
    cfg = quick_cfg()
    cfg.model.bbox_head.num_classes = 5
    kwargs = dict(onnxruntime_detector_cfg(cfg.model, exported[1]))
    kwargs.pop('type')
    with pytest.raises(ValueError) as err:
        ONNXRuntimeDetector(**kwargs)
    assert str(err.value).startswith(
        f'{exported[1]} was exported for 3 classes, but the config has '
        'model.bbox_head.num_classes=5')


def test_test_onnx_reports_a_file_that_is_not_a_model(tmp_path):
    path = tmp_path / 'model.onnx'
    path.write_text('not a model')
    result = run_tool([
        'tools/deployment/test_onnx.py', QUICK_CONFIG,
        str(path), '--work-dir',
        str(tmp_path)
    ])
    assert_clean_error(result, f'{path} is not a valid ONNX model')


def test_benchmark_times_pytorch_and_onnxruntime_side_by_side(
        exported, tmp_path):
    _, path = exported
    out = tmp_path / 'bench.json'
    result = run_tool([
        'tools/analysis_tools/benchmark.py', QUICK_CONFIG, '--onnx', path,
        '--ort-opt', 'basic', 'all', '--reference',
        f'reference={QUICK_CONFIG}', '--amp', '--shape', '64', '96',
        '--max-iter', '2', '--num-warmup', '0', '--threads', '1', '--out',
        str(out)
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(out.read_text())
    seconds = measured['seconds']
    rows = [
        'pytorch', 'pytorch (no speed-ups)', 'pytorch+amp', 'reference',
        'onnxruntime quick.onnx opt=basic threads=default',
        'onnxruntime quick.onnx opt=all threads=default'
    ]
    assert list(seconds) == rows
    for runs in seconds.values():
        assert len(runs['wall']) == len(runs['cpu']) == 2
        assert min(runs['wall']) > 0 and min(runs['cpu']) > 0
    assert '| pytorch | ' in result.stdout and '| 1.00x |' in result.stdout
    assert measured['setting']['speedups'] == [
        'folded_batch_norms', 'channels_last'
    ]
    flops = measured['flops']
    assert flops > 0
    for name in ('pytorch', 'pytorch+amp'):
        gflops = 2 * flops / statistics.median(seconds[name]['wall']) / 1e9
        assert f'{name}: ' in result.stdout
        assert f'{gflops:.0f} GFLOP/s' in result.stdout


def test_publish_model_strips_training_state(trained, tmp_path):
    import hashlib
    import subprocess
    import sys
    result = run_tool([
        'tools/model_converters/publish_model.py',
        str(trained['work_dir'] / 'epoch_2.pth'),
        str(tmp_path / 'tiny.pth')
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    published = result.stdout.strip().splitlines()[-1]
    digest = hashlib.sha256(open(published, 'rb').read()).hexdigest()
    assert published == str(tmp_path / f'tiny-{digest[:8]}.pth')
    # Loads under weights_only in a bare interpreter (no allow-list).
    code = ('import sys, torch; c = torch.load(sys.argv[1], '
            'weights_only=True); print(sorted(c))')
    loaded = subprocess.run([sys.executable, '-c', code, published],
                            capture_output=True,
                            text=True)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.strip() == "['meta', 'state_dict']"


def test_int8_quantisation_keeps_the_interface(exported, synthetic_root,
                                               tmp_path):
    import onnx

    from mmdet_cdetr.deployment import calibration_images, quantize_int8
    model, path = exported
    out = str(tmp_path / 'int8.onnx')
    quantize_int8(path, out, calibration_images(quick_cfg(synthetic_root), 4))
    ops = {node.op_type for node in onnx.load(out).graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear', 'Conv'} <= ops
    inputs, _ = random_image(model, OTHER_SHAPE)
    (dets, labels), (ref_dets, _) = OrtRunner(out)(inputs), OrtRunner(path)(
        inputs)
    assert dets.shape == ref_dets.shape and labels.shape == dets.shape[:2]
    assert OrtRunner(out).num_classes == 3
    # close to float32, not equal to it
    score_diff = np.abs(np.sort(dets[0, :, 4]) - np.sort(ref_dets[0, :, 4]))
    assert 0 < score_diff.max() < 0.1


def test_group_trained_model_exports_the_plain_graph(exported, tmp_path):
    """Group DETR's extra query groups serve training only: the export of a
    K=3 model is the graph of the plain model, with the same detections as
    its PyTorch predict."""
    import onnx
    cfg = quick_cfg()
    cfg.model.num_query_groups = 3
    cfg.model.train_cfg.assigner.type = 'GroupHungarianAssigner'
    model = MODELS.build(cfg.model).eval()
    randomize_(model, seed=3)
    path = str(tmp_path / 'group.onnx')
    export_onnx(model, path, EXPORT_SHAPE)
    inputs, sample = random_image(model, OTHER_SHAPE)
    with torch.no_grad():
        pred = model.predict(inputs, [sample], rescale=False)[0].pred_instances
    diffs = compare_detections((pred.bboxes, pred.scores, pred.labels),
                               OrtRunner(path)(inputs))
    assert diffs['labels'] == 0 and diffs['scores'] <= 1e-4
    assert diffs['boxes_px'] <= 0.05

    def ops_and_weight_shapes(file):
        graph = onnx.load(file).graph
        return (sorted(node.op_type for node in graph.node),
                sorted(tuple(init.dims) for init in graph.initializer))

    assert ops_and_weight_shapes(path) == ops_and_weight_shapes(exported[1])
