"""Your own data: fine-tuning onto another class set, the data checks and
their errors, the quick start's schedule and seeding."""
import json
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import (REPO, assert_clean_error, quick_cfg, run_tool,
                      tiny_loader, write_config)
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.fileio import LocalBackend, register_backend
from mmengine.optim import OptimWrapper
from mmengine.runner.checkpoint import load_state_dict

from mmdet_cdetr.datasets import coco as coco_module
from mmdet_cdetr.datasets.annotation_checks import AnnotationError
from mmdet_cdetr.datasets.transforms import load_image
from mmdet_cdetr.engine import FractionalMultiStepLR
from mmdet_cdetr.registry import DATASETS, METRICS, MODELS, TRANSFORMS

TWO_CLASSES = "dict(classes=('square', 'circle'))"
# write_config's loaders, with the classes of `metainfo`.
LOADER_WITH_METAINFO = tiny_loader('metainfo=metainfo')


def _two_class_config(path, data_root, **overrides):
    return write_config(
        path,
        data_root,
        metainfo=TWO_CLASSES,
        train_dataloader=LOADER_WITH_METAINFO,
        val_dataloader=LOADER_WITH_METAINFO,
        test_dataloader='val_dataloader',
        model='dict(bbox_head=dict(num_classes=2))',
        **overrides)


@pytest.fixture
def data_copy(synthetic_root, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(synthetic_root, root)
    return root


def _edit_annotations(root, split, edit):
    path = root / f'annotations/instances_{split}.json'
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def _build_dataset(root, split='train', classes=None):
    cfg = quick_cfg(str(root) + '/')
    dataset_cfg = (cfg.train_dataloader
                   if split == 'train' else cfg.val_dataloader).dataset
    if classes is not None:
        dataset_cfg.metainfo = dict(classes=classes)
    return DATASETS.build(dataset_cfg)


# --- fine-tuning onto another class set ---


def test_head_reinitialises_a_mismatched_classifier_and_loads_the_rest():
    three = MODELS.build(quick_cfg().model)
    three.init_weights()
    for param in three.parameters():
        param.data.uniform_(-1, 1)
    cfg = quick_cfg()
    cfg.model.bbox_head.num_classes = 2
    two = MODELS.build(cfg.model)
    two.init_weights()
    with pytest.raises(ValueError, match=r'\(3, 128\).*\(2, 128\)'):
        load_state_dict(two, three.state_dict())

    two.bbox_head.reset_mismatched_classifier = True
    load_state_dict(two, three.state_dict())
    theirs = three.state_dict()
    for name, value in two.state_dict().items():
        if name.startswith('bbox_head.fc_cls.'):
            assert value.shape[0] == 2
        else:
            assert torch.equal(value, theirs[name]), name
    prior = -np.log((1 - 0.01) / 0.01)
    assert torch.allclose(two.bbox_head.fc_cls.bias,
                          torch.full((2, ), prior, dtype=torch.float32))
    assert two.bbox_head.fc_cls.weight.abs().max() < 1 / np.sqrt(128) + 1e-6


def test_fine_tune_three_to_two_classes_trains(trained, synthetic_root,
                                               tmp_path):
    ckpt = trained['work_dir'] / 'epoch_2.pth'
    config = _two_class_config(
        tmp_path / 'two.py', synthetic_root, load_from=repr(str(ckpt)))
    result = run_tool([
        'tools/train.py', config, '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', 'train_cfg.max_epochs=1'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert re.search(
        r'bbox_head\.fc_cls\.weight \(3, 128\) -> \(2, 128\); '
        r'bbox_head\.fc_cls\.bias \(3,\) -> \(2,\)', log), log[-3000:]
    assert 'coco/bbox_mAP' in log
    saved = torch.load(
        tmp_path / 'work/epoch_1.pth', map_location='cpu', weights_only=True)
    assert saved['state_dict']['bbox_head.fc_cls.weight'].shape == (2, 128)

    # Resuming is no fine-tuning: the mismatch is refused.
    resumed = run_tool([
        'tools/train.py', config, '--work-dir',
        str(tmp_path / 'resume'), '--resume',
        str(ckpt)
    ])
    assert_clean_error(resumed, 'bbox_head.fc_cls.weight', '(3, 128)',
                       '(2, 128)')


def test_worked_configs_are_consistent():
    for name in ('conditional_detr_r50_8x2_12e_custom.py',
                 'conditional_detr_r18_synthetic_2cls_finetune.py'):
        cfg = Config.fromfile(str(REPO / 'configs/custom' / name))
        classes = cfg.train_dataloader.dataset.metainfo['classes']
        assert cfg.model.bbox_head.num_classes == len(classes)
        assert cfg.val_dataloader.dataset.metainfo['classes'] == classes
        assert cfg.load_from
        assert 'end' not in cfg.param_scheduler[-1]
        MODELS.build(cfg.model)


# --- data checks ---


def test_class_name_absent_from_annotations(synthetic_root, tmp_path):
    config = write_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        metainfo="dict(classes=('square', 'hexagon'))",
        train_dataloader=LOADER_WITH_METAINFO,
        model='dict(bbox_head=dict(num_classes=2))')
    result = run_tool(['tools/train.py', config, '--work-dir', str(tmp_path)])
    assert_clean_error(result, "'hexagon'", 'instances_train.json',
                       "'square', 'circle', 'triangle'")


@pytest.mark.parametrize('key', ['images', 'annotations', 'categories'])
def test_annotation_file_without_a_required_key(data_copy, key):
    path = _edit_annotations(data_copy, 'train', lambda d: d.pop(key))
    with pytest.raises(ValueError, match=f"{path} has no '{key}'"):
        _build_dataset(data_copy)


def test_no_usable_training_image(data_copy):
    path = _edit_annotations(data_copy, 'train',
                             lambda d: d.update(annotations=[]))
    with pytest.raises(
            ValueError,
            match=f'no usable training image in {path}'
            r': none of its 32 images'):
        _build_dataset(data_copy)
    _edit_annotations(data_copy, 'train', lambda d: d.update(images=[]))
    with pytest.raises(ValueError, match=f'{path} lists no images'):
        _build_dataset(data_copy)


def test_num_classes_differs_from_classes(synthetic_root, tmp_path):
    config = write_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        model='dict(bbox_head=dict(num_classes=2))')
    result = run_tool(['tools/train.py', config, '--work-dir', str(tmp_path)])
    assert_clean_error(result, 'model.bbox_head.num_classes=2',
                       '3 classes (square, circle, triangle)')
    assert 'Epoch(train)' not in result.stdout


def test_nan_box_names_image_and_annotation(data_copy, tmp_path):
    data = json.loads(
        (data_copy / 'annotations/instances_val.json').read_text())
    ann = data['annotations'][5]
    image = next(i for i in data['images'] if i['id'] == ann['image_id'])

    def poison(d):
        d['annotations'][5]['bbox'][2] = float('nan')

    _edit_annotations(data_copy, 'val', poison)
    config = write_config(tmp_path / 'cfg.py', str(data_copy))
    result = run_tool(['tools/train.py', config, '--work-dir', str(tmp_path)])
    assert_clean_error(result, f'annotation id {ann["id"]}',
                       image['file_name'], 'instances_val.json', 'finite')


def test_bad_boxes_are_dropped_or_clipped_and_reported(data_copy):

    def damage(d):
        anns = d['annotations']
        anns[0]['bbox'][2] = 0  # zero width
        anns[1]['bbox'][3] = -1  # negative height
        anns[2]['bbox'][0] = -5.0  # partly left of the image
        anns[3]['bbox'][:2] = [500.0, 500.0]  # entirely outside

    path = _edit_annotations(data_copy, 'train', damage)
    anns = json.loads(path.read_text())['annotations']
    dataset = _build_dataset(data_copy)
    report = dataset._report
    assert report.counts == {
        'zero or negative size': 2,
        'clipped to the image': 1,
        'outside the image': 1
    }
    assert f'annotation id {anns[1]["id"]}' in report.summary()
    clipped = anns[2]
    info = next(
        dataset.get_data_info(i) for i in range(len(dataset))
        if dataset.get_data_info(i)['img_id'] == clipped['image_id'])
    x, y, w, h = clipped['bbox']
    assert [0.0, y, x + w, y + h] in [i['bbox'] for i in info['instances']]
    kept = sum(
        len(dataset.get_data_info(i)['instances'])
        for i in range(len(dataset)))
    assert kept == len(anns) - 3


def test_labels_and_evaluation_follow_the_order_of_metainfo_classes(data_copy):
    """Label i is classes[i] with a class list in another order than the
    file's categories, in the data set and in CocoMetric alike."""
    classes = ('triangle', 'square', 'circle')  # the file: square, circle, ..
    data = json.loads(
        (data_copy / 'annotations/instances_val.json').read_text())
    names = {cat['id']: cat['name'] for cat in data['categories']}
    assert tuple(names.values()) != classes
    dataset = _build_dataset(data_copy, 'val', classes)
    by_image = {}
    for ann in data['annotations']:
        by_image.setdefault(ann['image_id'],
                            []).append(names[ann['category_id']])
    metric = METRICS.build(
        dict(
            type='CocoMetric',
            ann_file=str(data_copy / 'annotations/instances_val.json'),
            classwise=True))
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        labels = [inst['bbox_label'] for inst in info['instances']]
        assert sorted(classes[label] for label in labels) == sorted(
            by_image.get(info['img_id'], []))
        boxes = [inst['bbox'] for inst in info['instances']]
        metric.process({}, [
            dict(
                img_id=info['img_id'],
                ori_shape=(info['height'], info['width']),
                pred_instances=dict(
                    bboxes=torch.tensor(boxes).reshape(-1, 4),
                    scores=torch.ones(len(boxes)),
                    labels=torch.tensor(labels, dtype=torch.long)))
        ])
    results = metric.evaluate(len(dataset))
    for name in classes:  # the ground truth itself: AP 1 for every class
        assert results[f'coco/{name}_precision'] == 1.0, results


@pytest.mark.parametrize('edit, needle', [
    (lambda d: d['images'][1].update(id=d['images'][0]['id']),
     r'1 repeated image ids \d+$'),
    (lambda d: d['annotations'][1].update(id=d['annotations'][0]['id']),
     r'1 repeated annotation ids \d+$'),
    (lambda d: d['categories'][1].update(name='square'),
     "1 repeated category names square$"),
    (lambda d: d['categories'][1].update(id=d['categories'][0]['id']),
     r'1 repeated category ids \d+$'),
    (lambda d: d['annotations'][4].update(image_id=12345),
     r'1 annotations of an image id not in "images": annotation ids \d+ '
     r'\(image_id 12345\)$'),
    (lambda d: d['annotations'][4].update(category_id=99),
     r'1 annotations of a category id not in "categories": annotation '
     r'ids \d+ '
     r'\(category_id 99\)$'),
    (lambda d: d['images'][2].update(width=0),
     r'1 images without a positive width and height: image ids \d+$'),
])
def test_inconsistent_annotation_file_is_one_error(data_copy, edit, needle):
    path = _edit_annotations(data_copy, 'train', edit)
    with pytest.raises(AnnotationError) as error:
        _build_dataset(data_copy)
    assert re.search(f'^COCO annotation file {path}: {needle}',
                     str(error.value)), str(error.value)


def _warnings(monkeypatch):
    found = []
    monkeypatch.setattr(coco_module, 'print_log',
                        lambda message, **kwargs: found.append(message))
    return found


def test_images_dropped_by_filter_cfg_are_counted(data_copy, monkeypatch):

    def add_negative_and_small(d):
        first = d['images'][0]
        d['images'].append(dict(first, id=1000, file_name='negative.png'))
        d['images'].append(
            dict(first, id=1001, file_name='small.png', width=8, height=8))
        d['annotations'].append(
            dict(
                d['annotations'][0],
                id=5000,
                image_id=1001,
                bbox=[0, 0, 4, 4],
                area=16))

    path = _edit_annotations(data_copy, 'train', add_negative_and_small)
    warnings = _warnings(monkeypatch)
    cfg = quick_cfg(str(data_copy) + '/').train_dataloader.dataset
    cfg.filter_cfg = dict(filter_empty_gt=True, min_size=16)
    dataset = DATASETS.build(cfg)
    assert len(dataset) == 32
    (line, ) = [w for w in warnings if 'filter_cfg' in w]
    assert line.startswith(f'{path}: filter_cfg dropped ')
    assert '1 images without annotations of the classes' in line
    assert 'negative.png' in line
    assert '1 images smaller than min_size=16' in line and 'small.png' in line

    cfg.filter_cfg = dict(filter_empty_gt=True, min_size=10000)
    with pytest.raises(
            AnnotationError,
            match=r"filter_cfg \{.*'min_size': 10000\} removed all 34 "
            f'images of {path}: .*smaller than min_size=10000'):
        DATASETS.build(cfg)


def test_no_positive_box_or_no_ground_truth(data_copy):

    def crowd(d):
        for ann in d['annotations']:
            ann['iscrowd'] = 1

    path = _edit_annotations(data_copy, 'train', crowd)
    count = len(json.loads(path.read_text())['annotations'])
    with pytest.raises(
            AnnotationError,
            match=f'no usable training image in {path}: all {count} boxes '
            'of the classes are iscrowd=1'):
        _build_dataset(data_copy)
    val = _edit_annotations(data_copy, 'val',
                            lambda d: d.update(annotations=[]))
    with pytest.raises(
            AnnotationError,
            match=f'no ground truth to evaluate in {val}: .*box AP would '
            'be -1'):
        _build_dataset(data_copy, 'val')


def _exif_jpeg(path, width, height, orientation):
    """A JPEG stored as width x height with an EXIF orientation tag."""
    from PIL import Image
    image = Image.new('RGB', (width, height), (200, 30, 30))
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes())


def test_image_is_decoded_in_the_orientation_its_annotation_describes(
        tmp_path, monkeypatch):
    path = tmp_path / 'rotated.jpg'
    _exif_jpeg(path, 64, 32, orientation=6)  # shown as 32 wide, 64 high
    warnings = []
    monkeypatch.setattr(load_image, 'print_log',
                        lambda message, **kwargs: warnings.append(message))
    load = TRANSFORMS.build(dict(type='LoadImageFromFile'))
    assert isinstance(load, load_image.CheckedLoadImageFromFile)
    shown = load(dict(img_path=str(path), height=64, width=32))
    assert shown['img'].shape[:2] == (64, 32) and not warnings
    stored = load(dict(img_path=str(path), height=32, width=64))
    assert stored['img'].shape[:2] == stored['img_shape'] == (32, 64)
    assert len(warnings) == 1 and 'EXIF orientation ignored' in warnings[0]
    with pytest.raises(
            load_image.ImageSizeError,
            match=f'image {path} decodes as 32x64 or 64x32 with its EXIF '
            r'orientation ignored \(width x height\), but its annotation '
            'lists 640x480'):
        load(dict(img_path=str(path), height=480, width=640))


def test_image_of_another_size_than_annotated_is_named(data_copy, tmp_path):
    """640x480 in the file, 128x128 on disk: one error from the worker."""
    data = json.loads(
        (data_copy / 'annotations/instances_train.json').read_text())
    image = data['images'][0]

    def enlarge(d):
        d['images'][0].update(width=640, height=480)

    _edit_annotations(data_copy, 'train', enlarge)
    dataset = _build_dataset(data_copy)
    index = next(
        i for i in range(len(dataset))
        if dataset.get_data_info(i)['img_id'] == image['id'])
    with pytest.raises(
            load_image.ImageSizeError,
            match=f'{image["file_name"]} decodes as 128x128 .*lists 640x480'
            '.*listed in .*instances_train.json'):
        dataset.prepare_data(index)


class _PrefixedLocalBackend(LocalBackend):
    """Files of the local disk under ``cdetrtest://``, recording each path
    it serves: a stand-in for object storage."""
    served: list = []

    def _local(self, path):
        path = str(path)
        _PrefixedLocalBackend.served.append(path)
        return path[len('cdetrtest://'):]

    def get(self, filepath):
        return super().get(self._local(filepath))

    def exists(self, filepath):
        return super().exists(self._local(filepath))

    def isfile(self, filepath):
        return super().isfile(self._local(filepath))

    def get_local_path(self, filepath):
        return super().get_local_path(self._local(filepath))


def test_data_is_read_through_mmengine_fileio(data_copy):
    register_backend(
        'cdetrtest', _PrefixedLocalBackend, force=True, prefixes='cdetrtest')
    _PrefixedLocalBackend.served.clear()
    root = f'cdetrtest://{data_copy}/'
    cfg = quick_cfg(root).train_dataloader.dataset
    cfg.backend_args = dict(backend='cdetrtest')
    dataset = DATASETS.build(cfg)
    dataset[0]
    served = _PrefixedLocalBackend.served
    assert f'{root}annotations/instances_train.json' in served
    assert any(path.startswith(f'{root}train/') for path in served)
    missing = dataset.get_data_info(1)['img_path']
    (data_copy / missing[len(root):]).unlink()
    with pytest.raises(FileNotFoundError, match=f'Image not found: {missing}'):
        dataset.prepare_data(1)


def test_undecodable_image_in_train_and_val(data_copy, tmp_path, trained):
    """A zero-byte training image and a corrupt validation image are named
    as soon as a data-loader worker meets them."""
    empty = sorted((data_copy / 'train').iterdir())[3]
    empty.write_bytes(b'')
    corrupt = sorted((data_copy / 'val').iterdir())[3]
    corrupt.write_bytes(b'not an image at all')
    config = write_config(
        tmp_path / 'cfg.py',
        str(data_copy),
        train_dataloader=tiny_loader(shuffle=False))
    train = run_tool(['tools/train.py', config, '--work-dir', str(tmp_path)])
    assert_clean_error(train, f'cannot decode image {empty}',
                       'instances_train.json')
    test = run_tool([
        'tools/test.py', config,
        str(trained['work_dir'] / 'epoch_2.pth'), '--work-dir',
        str(tmp_path)
    ])
    assert_clean_error(test, f'cannot decode image {corrupt}',
                       'instances_val.json')


def test_large_image_is_resized_by_the_quick_start(tmp_path):
    big = tmp_path / 'big.png'
    cv2.imwrite(str(big), np.zeros((1200, 1600, 3), np.uint8))
    pipeline = Compose(quick_cfg().train_dataloader.dataset.pipeline)
    out = pipeline(
        dict(
            img_path=str(big),
            img_id=0,
            height=1200,
            width=1600,
            instances=[
                dict(bbox=[0, 0, 400, 300], bbox_label=0, ignore_flag=0)
            ]))
    assert max(out['inputs'].shape[1:]) == 128


# --- schedule and seeding ---


def test_lr_drop_follows_max_epochs():
    optim = OptimWrapper(torch.optim.SGD([torch.zeros(1)], lr=1.0))
    for end, drop in ((20, 16), (5, 4), (2, 2)):
        scheduler = FractionalMultiStepLR(
            optim, milestone_fractions=[0.8], end=end)
        assert dict(scheduler.milestones) == {drop: 1}
    with pytest.raises(ValueError, match='needs an end'):
        FractionalMultiStepLR(optim, milestone_fractions=[0.8])
    quick = Config.fromfile(
        str(REPO / 'configs/quickstart/'
            'conditional_detr_r18_synthetic.py'))
    assert quick.param_scheduler[-1].type == 'FractionalMultiStepLR'
    assert 'end' not in quick.param_scheduler[-1]
    assert quick.train_cfg.val_interval < quick.train_cfg.max_epochs


def test_two_seeded_trainings_give_identical_losses(synthetic_root, tmp_path):
    config = write_config(tmp_path / 'cfg.py', synthetic_root)
    losses = []
    for run in ('a', 'b'):
        result = run_tool([
            'tools/train.py', config, '--work-dir',
            str(tmp_path / run), '--cfg-options', 'train_cfg.max_epochs=1'
        ])
        assert result.returncode == 0, result.stderr[-3000:]
        losses.append(re.findall(r' loss: ([0-9.]+)', result.stdout))
    assert len(losses[0]) >= 4
    assert losses[0] == losses[1]
