"""Released checkpoints by name or URL, converted as MMEngine loads them
(``mmdet_cdetr/converters/in_memory.py``).

Offline: a server on 127.0.0.1 serves random-weight checkpoints of the tiny
COCO model in each layout (official, MMDetection zoo, HuggingFace) under
the paths of the real URLs of ``configs/conditional_detr/metafile.yml``,
and the metafile's entries are redirected to it. Every detection must equal
that of the same weights converted by hand with the converters' functions.
"""
import argparse
import functools
import http.server
import json
import pickle
import threading
from pathlib import Path
from typing import List
from urllib.parse import urlparse

import mmcv
import numpy as np
import pytest
import torch
from conftest import (REPO, assert_clean_error, assert_same_detections,
                      coco_id2label, run_tool, write_tiny_coco_config)
from mmengine.infer import BaseInferencer
from mmengine.structures import InstanceData
from safetensors.torch import load_file
from test_parity_official import _coco80_annotations, official_state

from mmdet_cdetr.converters import (COCO_CLASSES, convert_huggingface,
                                    convert_official, finish)
from mmdet_cdetr.converters.in_memory import cache_path
from mmdet_cdetr.datasets.synthetic_coco import make_image
from mmdet_cdetr.utils.errors import CheckpointError

OFFICIAL_R50 = ('https://github.com/DeppMeng/ConditionalDETR/releases/'
                'download/v1.0/ConditionalDETR_r50_epoch50.pth')
OFFICIAL_DC5_R50 = ('https://github.com/DeppMeng/ConditionalDETR/releases/'
                    'download/v1.0/ConditionalDETR_r50dc5_epoch50.pth')
MMDET_R50 = ('https://download.openmmlab.com/mmdetection/v3.0/'
             'conditional_detr/conditional-detr_r50_8xb2-50e_coco/'
             'conditional-detr_r50_8xb2-50e_coco_20221121_180202-c83a1dc0.pth')
# metafile name -> its Weights
RELEASED = {
    'conditional_detr_r50_8x2_50e_coco': OFFICIAL_R50,
    'conditional_detr_r50_8x2_50e_coco_mmdet': MMDET_R50,
    'conditional_detr_r50_dc5_8x1_50e_coco': OFFICIAL_DC5_R50,
}
NO_WEIGHTS = ('conditional_detr_r101_8x2_50e_coco',
              'conditional_detr_r101_dc5_8x1_50e_coco')
HF_PATH = '/microsoft/conditional-detr-tiny/model.safetensors'
DETR_PATH = '/detr/detr-tiny.pth'  # official layout, not Conditional DETR
GROUP_PATH = '/group/ConditionalDETR_tiny_groupdetr.pth'
IMAGE_SHAPES = ((96, 128), (128, 80))


def _official_file(path: Path, state: dict) -> None:
    """What the official main.py saves: the model and the training state,
    with its arguments as an argparse.Namespace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        dict(
            model=state,
            optimizer=dict(state={}, param_groups=[dict(lr=1e-4)]),
            epoch=49,
            args=argparse.Namespace(backbone='resnet50', dilation=False)),
        path)


def _finished(conversion, config: str, out: Path) -> str:
    report = finish(conversion, config, str(out),
                    dict(dataset_meta=dict(classes=COCO_CLASSES)))
    assert report.complete, report.summary()
    return str(out)


@pytest.fixture(scope='module')
def weights(hf_reference, tiny_coco_config, tmp_path_factory) -> dict:
    """The served tree (``root``) and the same weights converted by hand
    (``hand``: metafile name or served path -> checkpoint file)."""
    tmp = tmp_path_factory.mktemp('pretrained')
    root = tmp / 'www'
    hub = load_file(str(hf_reference.dir / 'model.safetensors'))
    official = official_state(hub)
    _official_file(root / urlparse(OFFICIAL_R50).path[1:], official)
    hand_official = _finished(
        convert_official(official, tiny_coco_config), tiny_coco_config,
        tmp / 'hand_official.pth')
    # MMDetection's zoo: mmdet's names (other weights than the official)
    zoo = {
        key: value + 0.01 if value.is_floating_point() else value
        for key, value in torch.load(hand_official)['state_dict'].items()
    }
    zoo_file = root / urlparse(MMDET_R50).path[1:]
    zoo_file.parent.mkdir(parents=True)
    torch.save(
        dict(
            meta=dict(
                mmdet_version='3.0.0rc5',
                dataset_meta=dict(classes=COCO_CLASSES)),
            state_dict=zoo), zoo_file)
    (root / HF_PATH[1:]).parent.mkdir(parents=True)
    (root / HF_PATH[1:]).write_bytes(
        (hf_reference.dir / 'model.safetensors').read_bytes())
    hand_hf = _finished(
        convert_huggingface(hub, coco_id2label()), tiny_coco_config,
        tmp / 'hand_hf.pth')
    torch.save(hub, tmp / 'pytorch_model.bin')
    _official_file(
        root / DETR_PATH[1:], {
            key: value
            for key, value in official.items()
            if 'ref_point_head' not in key and 'query_scale' not in key
        })
    _official_file(
        root / GROUP_PATH[1:],
        dict(official, **{'query_embed.weight': torch.ones(600, 64)}))
    return dict(
        root=root,
        tmp=tmp,
        config=tiny_coco_config,
        hand={
            'conditional_detr_r50_8x2_50e_coco': hand_official,
            'conditional_detr_r50_8x2_50e_coco_mmdet': str(zoo_file),
            HF_PATH: hand_hf,
        },
        hf_bin=str(tmp / 'pytorch_model.bin'))


@pytest.fixture(scope='module')
def server(weights):
    """An HTTP server on 127.0.0.1 serving ``weights['root']``; ``.url``
    and ``.requests`` (the paths asked for)."""
    requests: List[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):

        def log_message(self, *args) -> None:
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0),
        functools.partial(Handler, directory=str(weights['root'])))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield argparse.Namespace(
        url=f'http://127.0.0.1:{httpd.server_address[1]}', requests=requests)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty download cache (torch.hub's directory) for each test."""
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home


def _local(url: str, server) -> str:
    """``url`` on the local server (same path, so the same cache name)."""
    return server.url + urlparse(url).path


@pytest.fixture
def redirected(weights, server, monkeypatch) -> None:
    """The metafile's entries with their Weights on the local server and
    the tiny config as their model."""
    real = BaseInferencer._get_models_from_metafile

    def models(directory: str):
        for entry in real(directory):
            if entry['Name'] in weights['hand']:
                entry = dict(
                    entry,
                    Weights=_local(entry['Weights'], server),
                    Config=weights['config'])
            yield entry

    monkeypatch.setattr(BaseInferencer, '_get_models_from_metafile',
                        staticmethod(models))


def _images() -> List[np.ndarray]:
    rng = np.random.default_rng(5)
    return [
        make_image(rng, max(h, w), 3, 0.2, 0.5, empty_prob=0)[0][:h, :w]
        for h, w in IMAGE_SHAPES
    ]


def _predictions(inferencer, images) -> list:
    results = inferencer(
        images, return_datasamples=True, show=False)['predictions']
    return [result.pred_instances for result in results]


def _inferencer(model: str, weights=None):
    from mmdet.apis import DetInferencer
    return DetInferencer(
        model, weights=weights, device='cpu', scope='mmdet_cdetr')


def test_metafile_names_the_released_checkpoints():
    entries = {
        entry['Name']: entry
        for entry in BaseInferencer._get_models_from_metafile(str(REPO))
    }
    for name, url in RELEASED.items():
        assert entries[name]['Weights'] == url
        assert (REPO / entries[name]['Config']).is_file()
    for name in NO_WEIGHTS:  # only on a file-sharing site: by hand
        assert not entries[name].get('Weights')


@pytest.mark.parametrize('name', [
    'conditional_detr_r50_8x2_50e_coco',
    'conditional_detr_r50_8x2_50e_coco_mmdet'
])
def test_inferencer_by_name_without_weights(name, weights, server, redirected,
                                            torch_home):
    images = _images()
    by_name = _inferencer(name)
    assert by_name.model.dataset_meta['classes'] == COCO_CLASSES
    by_hand = _inferencer(weights['config'], weights['hand'][name])
    assert_same_detections(
        _predictions(by_name, images), _predictions(by_hand, images))
    # downloaded once, into torch.hub's cache, where MMEngine looks
    path = urlparse(RELEASED[name]).path
    cached = Path(cache_path(RELEASED[name]))
    assert cached.is_file() and str(cached).startswith(str(torch_home))
    assert server.requests.count(path) == 1
    _inferencer(name)
    assert server.requests.count(path) == 1


def test_huggingface_by_url_and_path(weights, server, torch_home):
    images = _images()
    expected = _predictions(
        _inferencer(weights['config'], weights['hand'][HF_PATH]), images)
    for source in (server.url + HF_PATH, weights['hf_bin']):
        got = _predictions(_inferencer(weights['config'], source), images)
        assert_same_detections(got, expected)
    # every HuggingFace model's file is model.safetensors: not one cache name
    cached = Path(cache_path(server.url + HF_PATH))
    assert cached.name == 'microsoft_conditional-detr-tiny_model.safetensors'
    assert cached.is_file() and str(cached).startswith(str(torch_home))


@pytest.mark.parametrize('path, needles', [
    (GROUP_PATH, ('GroupDETR branch', 'official2mmdet.py')),
    (DETR_PATH,
     ('DETR checkpoint of its official repository', 'not Conditional DETR')),
])
def test_unsupported_format_by_url_is_named(path, needles, weights, server,
                                            torch_home):
    with pytest.raises(CheckpointError) as err:
        _inferencer(weights['config'], server.url + path)
    for needle in needles:
        assert needle in str(err.value)


def test_huggingface_of_other_classes_is_refused():
    from mmdet_cdetr.converters.in_memory import as_ours
    state = {
        'model.backbone.conv_encoder.model.conv1.weight': torch.zeros(1),
        'model.decoder.ref_point_head.layers.0.weight': torch.zeros(1),
        'model.query_position_embeddings.weight': torch.zeros(1),
        'class_labels_classifier.weight': torch.zeros(3, 4),
    }
    with pytest.raises(CheckpointError, match='3 class logits.*--hf-config'):
        as_ours(state, 'pytorch_model.bin')


def test_a_failed_download_is_named(weights, server, torch_home):
    with pytest.raises(CheckpointError, match='cannot download checkpoint'):
        _inferencer(weights['config'], server.url + '/missing.pth')


@pytest.fixture(scope='module')
def coco80(weights, synthetic_root) -> str:
    ann = str(weights['tmp'] / 'instances_val_coco80.json')
    _coco80_annotations(synthetic_root, ann)
    return ann


def _dataset(synthetic_root: str, ann: str, train: bool = False) -> str:
    annotations = "dict(type='LoadAnnotations', with_bbox=True),"
    return f"""dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    {'sampler=dict(type="DefaultSampler", shuffle=False),' if train else ''}
    dataset=dict(
        data_root='{synthetic_root}/', ann_file='{ann}',
        data_prefix=dict(img='val/'), {'filter_cfg=None,' if train else ''}
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(128, 128), keep_ratio=True),
            {annotations}
            dict(type='PackDetInputs', meta_keys=(
                'img_id', 'img_path', 'ori_shape', 'img_shape',
                'scale_factor'))]))"""


def _tool_env(torch_home: Path) -> dict:
    import os
    return dict(os.environ, TORCH_HOME=str(torch_home))


def _test_tool(config: str, checkpoint: str, out: Path, env: dict):
    return run_tool([
        'tools/test.py', config, checkpoint, '--out',
        str(out), '--work-dir',
        str(out.parent / 'work')
    ],
                    env=env)


def test_test_tool_with_url(weights, server, synthetic_root, coco80,
                            torch_home, tmp_path):
    config = write_tiny_coco_config(
        tmp_path / 'eval.py', f"""
test_dataloader = {_dataset(synthetic_root, coco80)}
test_evaluator = dict(ann_file='{coco80}')
""")
    env = _tool_env(torch_home)
    result = _test_tool(config, _local(OFFICIAL_R50, server),
                        tmp_path / 'url/preds.pkl', env)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert 'converted to this project\'s names in memory' in output
    for warning in ('do not match exactly', 'missing keys', 'unexpected key'):
        assert warning not in output
    hand = _test_tool(config,
                      weights['hand']['conditional_detr_r50_8x2_50e_coco'],
                      tmp_path / 'hand/preds.pkl', env)
    assert hand.returncode == 0, hand.stderr[-3000:]
    results = [
        pickle.loads((tmp_path / f'{run}/preds.pkl').read_bytes())
        for run in ('url', 'hand')
    ]
    assert len(results[0]) == len(results[1]) == 16

    def instances(run: list) -> list:
        return [
            InstanceData(**result['pred_instances'])
            for result in sorted(run, key=lambda result: result['img_id'])
        ]

    assert_same_detections(*map(instances, results))
    # an unsupported format by URL: one error line naming it
    refused = _test_tool(config, server.url + DETR_PATH,
                         tmp_path / 'detr/preds.pkl', env)
    assert_clean_error(refused, server.url + DETR_PATH,
                       'DETR checkpoint of its official repository')


def test_image_demo_with_weights_url(weights, server, torch_home, tmp_path):
    from mmengine.config import Config

    from mmdet_cdetr.speedup import apply_configured_speedups
    image_dir = tmp_path / 'images'
    images = _images()
    for i, image in enumerate(images):
        mmcv.imwrite(image, str(image_dir / f'{i}.png'))
    out_dir = tmp_path / 'out'
    result = run_tool([
        'tools/image_demo.py',
        str(image_dir), weights['config'], '--weights',
        _local(OFFICIAL_R50, server), '--out-dir',
        str(out_dir), '--device', 'cpu'
    ],
                      env=_tool_env(torch_home))
    assert result.returncode == 0, result.stderr[-3000:]
    # the demo's own speed-ups, by hand
    inferencer = _inferencer(
        weights['config'],
        weights['hand']['conditional_detr_r50_8x2_50e_coco'])
    apply_configured_speedups(
        inferencer.model,
        Config.fromfile(weights['config']).get('custom_hooks'),
        inference=True)
    expected = _predictions(inferencer,
                            [str(image_dir / f'{i}.png') for i in range(2)])
    got = []
    for i in range(2):
        pred = json.loads((out_dir / f'preds/{i}.json').read_text())
        got.append(
            InstanceData(
                labels=torch.tensor(pred['labels']),
                scores=torch.tensor(pred['scores']),
                bboxes=torch.tensor(pred['bboxes'])))
    assert_same_detections(got, expected)


def test_load_from_url_in_a_training_config(weights, server, synthetic_root,
                                            coco80, torch_home, tmp_path):
    """Two iterations at learning rate 0 from ``load_from = URL``: the
    saved weights are the converted ones."""
    config = write_tiny_coco_config(
        tmp_path / 'finetune.py', f"""
load_from = '{_local(OFFICIAL_R50, server)}'
train_dataloader = {_dataset(synthetic_root, coco80, train=True)}
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2)
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
optim_wrapper = dict(optimizer=dict(lr=0.0))
param_scheduler = []
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=2), logger=dict(interval=1))
""")
    work_dir = tmp_path / 'work'
    result = run_tool(['tools/train.py', config, '--work-dir',
                       str(work_dir)],
                      env=_tool_env(torch_home))
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert 'converted to this project\'s names in memory' in output
    for warning in ('do not match exactly', 'missing keys', 'unexpected key'):
        assert warning not in output
    trained = torch.load(work_dir / 'iter_2.pth')['state_dict']
    hand = torch.load(
        weights['hand']['conditional_detr_r50_8x2_50e_coco'])['state_dict']
    assert trained.keys() == hand.keys()
    for key, value in hand.items():
        assert torch.equal(trained[key], value), key
