import copy
import importlib.metadata
import itertools
import os
import os.path as osp
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import numpy as np
import pytest
import torch
from forked_tools import ForkedTool, run_forked, run_forked_distributed
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from mmengine.utils import digit_version

import mmdet_cdetr  # noqa: F401  (registers the components)
from mmdet_cdetr.datasets import make_synthetic_coco
from mmdet_cdetr.models import ConditionalDETR
from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.torch_compat import SAFE_WEIGHTS_ONLY_LOAD

REPO = Path(__file__).resolve().parents[1]
QUICK_CONFIG = str(REPO /
                   'configs/quickstart/conditional_detr_r18_synthetic.py')
R50_CONFIG = str(
    REPO / 'configs/conditional_detr/conditional_detr_r50_8x2_50e_coco.py')

# What `make test-oldest-torch` runs on the oldest supported torch: the
# exactness tests (official code, mmdet's built-in, Group DETR, 1 and 2
# processes), training, --resume, tools/test.py, ONNX export, converters.
OLDEST_TORCH_MODULES = {
    'test_parity_mmdet', 'test_parity_official', 'test_parity_huggingface',
    'test_group_detr', 'test_distributed', 'test_decoder_math',
    'test_conditional_attention', 'test_head', 'test_detector',
    'test_end_to_end', 'test_exact_resume', 'test_converters',
    'test_deployment', 'test_checkpoint_safety', 'test_speedups',
    'test_folded_batch_norm', 'test_torch_compat'
}
# HuggingFace's reference model: transformers 5 needs torch 2.6, so the
# oldest torch's environment has transformers 4, whose API differs a little.
try:
    TRANSFORMERS_4 = digit_version(
        importlib.metadata.version('transformers')) < digit_version('5.0.0')
except importlib.metadata.PackageNotFoundError:
    TRANSFORMERS_4 = False
# Unpickling restricted to an allow-list needs torch 2.6 (torch_compat).
needs_safe_loading = pytest.mark.skipif(
    not SAFE_WEIGHTS_ONLY_LOAD,
    reason=f'torch {torch.__version__} cannot restrict unpickling')


def pytest_configure(config) -> None:
    """In a pytest-xdist worker (``make test`` runs several), torch and the
    tools the tests start use one thread, so the workers share the cores
    instead of each spinning threads on all of them."""
    if os.environ.get('PYTEST_XDIST_WORKER'):
        os.environ['OMP_NUM_THREADS'] = '1'
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items) -> None:
    """Mark the modules of :data:`OLDEST_TORCH_MODULES` ``oldest_torch``;
    tests marked ``cuda`` skip where no CUDA device is."""
    skip = pytest.mark.skip(reason='needs a CUDA device')
    for item in items:
        if item.module.__name__ in OLDEST_TORCH_MODULES:
            item.add_marker(pytest.mark.oldest_torch)
        if 'cuda' in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _scope_and_seed():
    init_default_scope('mmdet_cdetr')
    torch.manual_seed(0)


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory) -> str:
    """A small synthetic COCO set (the demo's generator, fewer images)."""
    root = str(tmp_path_factory.mktemp('synthetic_coco'))
    make_synthetic_coco(root, num_train=32, num_val=16, seed=1)
    return root


def quick_cfg(data_root: str = 'data/synthetic_coco/') -> Config:
    """The quick-start config pointed at ``data_root``, tiny and fast."""
    cfg = Config.fromfile(QUICK_CONFIG)
    for loader in (cfg.train_dataloader, cfg.val_dataloader,
                   cfg.test_dataloader):
        loader.dataset.data_root = data_root
        loader.num_workers = 0
        loader.persistent_workers = False
    ann = osp.join(data_root, 'annotations/instances_val.json')
    cfg.val_evaluator.ann_file = ann
    cfg.test_evaluator.ann_file = ann
    # Models built from it are compared with references (mmdet's built-in)
    # that pad a batch; tests of the batch-independent mode switch it on.
    cfg.model.test_cfg.batch_independent = False
    return cfg


def build_quick_model(**head_overrides) -> torch.nn.Module:
    cfg = quick_cfg()
    cfg.model.bbox_head.update(head_overrides)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def run_tool(args: List[str],
             timeout: int = 600,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run a ``tools/`` command line from the repo, in a process of its own:
    a shell script as it is, a Python tool forked from a process that has
    imported the libraries already (:mod:`forked_tools`)."""
    env = _tool_env(env)
    if not str(args[0]).endswith('.sh'):
        return run_forked(args, REPO, env, timeout)
    return subprocess.run(
        args,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout)


def start_tool(args: List[str], env: Optional[dict] = None) -> ForkedTool:
    """A Python tool started as :func:`run_tool` starts it, left running
    (for tests that signal it)."""
    return ForkedTool(args, REPO, _tool_env(env))


def run_tool_distributed(
        args: List[str],
        nprocs: int,
        port: int,
        timeout: int = 600,
        env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """A Python tool in ``nprocs`` processes with ``--launcher pytorch``, as
    ``tools/dist_*.sh`` start it, the processes forked as :func:`run_tool`'s
    (the scripts themselves are tested in test_end_to_end and
    test_launchers)."""
    return run_forked_distributed(args, nprocs, port, REPO, _tool_env(env),
                                  timeout)


def _tool_env(env: Optional[dict]) -> dict:
    """A tool's environment: ``env`` (default: ours) with the repository
    importable and user errors in their one-line form."""
    env = dict(os.environ if env is None else env)
    env['PYTHONPATH'] = os.pathsep.join(
        filter(None, [str(REPO), env.get('PYTHONPATH')]))
    env.pop('MMDET_CDETR_TRACEBACK', None)
    return env


_fresh_loggers = itertools.count()


def _fresh_current_logger() -> None:
    """Make a new MMEngine logger the current one. Its handler writes to the
    ``sys.stdout`` of this moment, so a tool run in-process never logs to the
    stream of an earlier test's ``capsys``, which pytest has closed."""
    MMLogger.get_instance(f'in-process-tool-{next(_fresh_loggers)}')


def run_tool_in_process(monkeypatch, capsys, tool: str, *args) -> tuple:
    """``tools/<tool>`` with ``args`` in this process (no start-up cost):
    its exit status (0 when it returns) and what it wrote to stdout and
    stderr."""
    monkeypatch.setattr(sys, 'argv', [tool, *map(str, args)])
    monkeypatch.delenv('MMDET_CDETR_TRACEBACK', raising=False)
    _fresh_current_logger()
    code = 0
    try:
        runpy.run_path(str(REPO / 'tools' / tool), run_name='__main__')
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    with capsys.disabled():
        _fresh_current_logger()
    return code, out.out, out.err


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str):
    """The tool failed with one ``error:`` line holding every needle."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: '), last
    for needle in needles:
        assert needle in last, last


# --- Parity with reference implementations (tests/test_parity_*.py) ---

# Conditional DETR for the 80 COCO classes at toy size: a bottleneck
# ResNet-50 of 1/8 width (HuggingFace's ResNet mirrors it), d_model 64.
TINY_COCO_CONFIG = f"""_base_ = '{R50_CONFIG}'
embed_dims = {{embed_dims}}
attention = dict(embed_dims=embed_dims, num_heads=4)
ffn = dict(embed_dims=embed_dims, feedforward_channels=128)
model = dict(
    num_queries=30,
    backbone=dict(base_channels=8, init_cfg=None),
    neck=dict(in_channels=[256], out_channels=embed_dims),
    positional_encoding=dict(num_feats=embed_dims // 2),
    encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attention,
                                              ffn_cfg=ffn)),
    decoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attention,
                                              cross_attn_cfg=attention,
                                              ffn_cfg=ffn)),
    bbox_head=dict(embed_dims=embed_dims),
    # The references (official code, HuggingFace) pad a batch as mmdet does.
    test_cfg=dict(batch_independent=False))
"""
PARITY_IMAGE_SHAPES = ((160, 224), (224, 128))
PARITY_TOL = 1e-4  # max abs difference of logits and normalised boxes


def write_tiny_coco_config(path: Path,
                           extra: str = '',
                           embed_dims: int = 64) -> str:
    """``TINY_COCO_CONFIG`` (of width ``embed_dims``) plus ``extra``."""
    path.write_text(TINY_COCO_CONFIG.format(embed_dims=embed_dims) + extra)
    return str(path)


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights that keep activations in a realistic range, for every
    float parameter and buffer (BatchNorm statistics included), so that no
    zero-initialised layer hides a mismatch."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in module.state_dict(keep_vars=True).items():
            if not value.is_floating_point():
                continue
            if name.endswith('running_var'):
                new = torch.rand(value.shape, generator=gen) + 0.5
            elif value.dim() == 1 and name.endswith('weight'):  # norms
                new = torch.rand(value.shape, generator=gen) + 0.5
            elif 'embed' in name:  # query positions: spread references
                new = torch.randn(value.shape, generator=gen)
            elif value.dim() == 1:
                new = torch.randn(value.shape, generator=gen) * 0.1
            else:  # linear layers get peaky attention, as trained ones
                gain = 2. if value.dim() == 2 and 'decoder' in name else 1.
                new = torch.randn(
                    value.shape, generator=gen) * (
                        gain / value[0].numel()**0.5)
            value.copy_(new)


def parity_batch(model: torch.nn.Module, with_gt: bool = False):
    """Two synthetic images of different sizes through ``model``'s data
    preprocessor: normalised, padded inputs and their data samples."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from mmdet_cdetr.datasets.synthetic_coco import make_image
    rng = np.random.default_rng(3)
    inputs, samples = [], []
    for h, w in PARITY_IMAGE_SHAPES:
        img, _ = make_image(rng, max(h, w), 3, 0.2, 0.5, empty_prob=0)
        inputs.append(torch.from_numpy(img[:h, :w]).permute(2, 0, 1))
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        if with_gt:
            sample.gt_instances = InstanceData(
                bboxes=torch.tensor([[10., 20., 90., 120.]]),
                labels=torch.tensor([len(samples) * 17]))
        samples.append(sample)
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), False)
    return data['inputs'], data['data_samples']


def raw_predictions(model: torch.nn.Module, inputs: torch.Tensor,
                    samples: list):
    """Class logits and normalised (cx, cy, w, h) boxes of the last decoder
    layer, before post-processing."""
    with torch.no_grad():
        head_inputs = model.forward_transformer(
            model.extract_feat(inputs), samples)
        logits, boxes = model.bbox_head(**head_inputs)
    return logits[-1], boxes[-1]


def detections(model: torch.nn.Module, inputs: torch.Tensor,
               samples: list) -> list:
    """Final detections (``pred_instances``) in input-image pixels."""
    with torch.no_grad():
        results = model.predict(inputs, copy.deepcopy(samples), rescale=False)
    return [result.pred_instances for result in results]


def assert_same_detections(ours: list, theirs: list) -> dict:
    """Same labels in the same order, boxes within 0.01 px, scores within
    1e-5 (each side a list of per-image objects with ``labels``,
    ``bboxes``, ``scores``). Returns the largest differences."""
    diffs = dict(scores=0., bboxes_px=0.)
    for mine, ref in zip(ours, theirs):
        assert len(mine.labels) == len(ref.labels) > 0
        assert torch.equal(mine.labels, ref.labels)
        diffs['scores'] = max(diffs['scores'],
                              (mine.scores - ref.scores).abs().max().item())
        diffs['bboxes_px'] = max(diffs['bboxes_px'],
                                 (mine.bboxes - ref.bboxes).abs().max().item())
    assert diffs['scores'] <= 1e-5 and diffs['bboxes_px'] <= 0.01
    return diffs


def assert_finite_training_step(model: torch.nn.Module) -> None:
    """One loss computation and backward pass gives finite numbers."""
    model.train()
    inputs, samples = parity_batch(model, with_gt=True)
    losses = model.loss(inputs, samples)
    total = sum(value for key, value in losses.items() if 'loss' in key)
    total.backward()
    assert len(losses) > 3 and all(
        torch.isfinite(value).all() for value in losses.values())
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(grad).all() for grad in grads)


@pytest.fixture(scope='session')
def tiny_coco_config(tmp_path_factory) -> str:
    return write_tiny_coco_config(
        tmp_path_factory.mktemp('config') / 'tiny_coco.py')


def load_converted(config: str, checkpoint) -> torch.nn.Module:
    """Our model of ``config`` with ``checkpoint``, every key required."""
    from mmengine.runner import load_checkpoint
    model = MODELS.build(Config.fromfile(config).model)
    load_checkpoint(model, str(checkpoint), strict=True)
    return model.eval()


def coco_id2label() -> dict:
    """HuggingFace's COCO labels: one per category id, 'N/A' in the gaps."""
    from mmdet_cdetr.converters import COCO_CATEGORY_IDS, COCO_CLASSES
    id2label = {i: 'N/A' for i in range(91)}
    id2label.update(zip(COCO_CATEGORY_IDS, COCO_CLASSES))
    return id2label


@pytest.fixture(scope='session')
def hf_reference(tmp_path_factory):
    """A random-weight HuggingFace ConditionalDetrForObjectDetection with
    its own ResNet (bottleneck ResNet-50 of 1/8 width, as
    ``TINY_COCO_CONFIG``'s backbone) and 91 COCO logits, saved with
    ``save_pretrained`` (the hub's names) in ``.dir``."""
    import transformers
    backbone = transformers.ResNetConfig(
        embedding_size=8,
        hidden_sizes=[32, 64, 128, 256],
        depths=[3, 4, 6, 3],
        layer_type='bottleneck',
        out_features=['stage4'])
    id2label = coco_id2label()
    # transformers 4 (the one for torch below 2.6) defaults to a timm
    # ResNet-50 with hub weights; 5 has only backbone_config.
    legacy_backbone_options = dict(
        use_timm_backbone=False, backbone=None,
        use_pretrained_backbone=False) if TRANSFORMERS_4 else {}
    config = transformers.ConditionalDetrConfig(
        backbone_config=backbone,
        **legacy_backbone_options,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        num_queries=30,
        id2label=id2label,
        label2id={
            name: i
            for i, name in id2label.items()
        })
    model = transformers.ConditionalDetrForObjectDetection(config)
    randomize_(model, seed=1)
    model.eval()
    out_dir = tmp_path_factory.mktemp('hf') / 'model'
    model.save_pretrained(out_dir)
    return SimpleNamespace(model=model, dir=out_dir)


def hf_outputs(hf: torch.nn.Module, inputs: torch.Tensor, samples: list):
    """HuggingFace's outputs on our preprocessed batch (pixel mask from
    each image's size)."""
    mask = torch.zeros(inputs.shape[0], *inputs.shape[-2:], dtype=torch.long)
    for i, sample in enumerate(samples):
        h, w = sample.img_shape
        mask[i, :h, :w] = 1
    with torch.no_grad():
        return hf(pixel_values=inputs, pixel_mask=mask)


def hf_detections(outputs, samples: list) -> list:
    """HuggingFace's own post-processing (top-100 sigmoid scores) on the
    logits of the 80 COCO classes, boxes clamped to the image as mmdet does
    (HuggingFace and the official repository do not clamp)."""
    import transformers
    from mmengine.structures import InstanceData

    from mmdet_cdetr.converters import COCO_CATEGORY_IDS

    # transformers 5's PIL-backed processor is 4's default one
    processor = (
        transformers.ConditionalDetrImageProcessor()
        if TRANSFORMERS_4 else transformers.ConditionalDetrImageProcessorPil())
    sizes = [sample.img_shape for sample in samples]
    results = processor.post_process_object_detection(
        SimpleNamespace(
            logits=outputs.logits[..., list(COCO_CATEGORY_IDS)],
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


def assert_matches_hf(ours: torch.nn.Module, hf: torch.nn.Module) -> dict:
    """Logits and boxes before post-processing within 1e-4, then the same
    final detections. Returns the largest differences."""
    from mmdet_cdetr.converters import COCO_CATEGORY_IDS
    inputs, samples = parity_batch(ours)
    logits, boxes = raw_predictions(ours, inputs, samples)
    reference = hf_outputs(hf, inputs, samples)
    # our label i is the logit of COCO category COCO_CATEGORY_IDS[i]
    ref_logits = reference.logits[..., list(COCO_CATEGORY_IDS)]
    diffs = dict(
        logits=(logits - ref_logits).abs().max().item(),
        boxes=(boxes - reference.pred_boxes).abs().max().item())
    assert logits.std() > 0.1 and boxes.std() > 0.05  # not degenerate
    assert diffs['logits'] <= PARITY_TOL and diffs['boxes'] <= PARITY_TOL
    diffs.update(
        assert_same_detections(
            detections(ours, inputs, samples),
            hf_detections(reference, samples)))
    return diffs


# Where the hub's HuggingFace checkpoints keep the backbone.
HUB_BACKBONE = 'model.backbone.conv_encoder.model.'


def hf_resnet_to_torchvision(name: str) -> str:
    """A HuggingFace ResNet parameter name as torchvision (and timm, and
    mmdet) name it: ``conv1``/``bn1`` stem, ``layer{S}.{B}.conv{K}`` and
    ``bn{K}`` with S and K counted from 1, ``downsample.0`` (conv) and
    ``downsample.1`` (norm) for the shortcut."""
    if name.startswith('embedder.embedder.'):
        name = name.replace('embedder.embedder.convolution', 'conv1')
        return name.replace('embedder.embedder.normalization', 'bn1')
    _, _, stage, _, block, kind, *rest = name.split('.')
    layer = f'layer{int(stage) + 1}.{block}.'
    if kind == 'shortcut':
        index = '0' if rest[0] == 'convolution' else '1'
        return f'{layer}downsample.{index}.{rest[1]}'
    conv, module, param = rest
    kind = 'conv' if module == 'convolution' else 'bn'
    return f'{layer}{kind}{int(conv) + 1}.{param}'


def tiny_loader(dataset_keys: str = '', shuffle: bool = True) -> str:
    """A data loader for :func:`write_config`: batches of 8 read in this
    process, on the config's ``data_root``; ``dataset_keys`` adds settings
    to its dataset (e.g. ``'indices=8'``), ``shuffle=False`` keeps the
    annotation file's order (an image near its front is met in the first
    batch)."""
    sampler = '' if shuffle else 'sampler=dict(shuffle=False), '
    keys = f', {dataset_keys}' if dataset_keys else ''
    return ('dict(batch_size=8, num_workers=0, persistent_workers=False, '
            f'{sampler}dataset=dict(data_root=data_root{keys}))')


def write_config(path: Path,
                 data_root: str,
                 base: str = QUICK_CONFIG,
                 **overrides: str) -> str:
    """A config inheriting the quick-start one (or ``base``), on
    ``data_root``, tiny."""
    lines = [
        f"_base_ = '{base}'",
        f"data_root = '{data_root}/'",
        "ann_val = data_root + 'annotations/instances_val.json'",
        f'train_dataloader = {tiny_loader()}',
        f'val_dataloader = {tiny_loader()}',
        'test_dataloader = val_dataloader',
        'val_evaluator = dict(ann_file=ann_val)',
        'test_evaluator = val_evaluator',
        'train_cfg = dict(max_epochs=2, val_interval=2)',
        'default_hooks = dict(checkpoint=dict(interval=1, '
        'max_keep_ckpts=3), logger=dict(interval=1))',
    ] + [f'{key} = {value}' for key, value in overrides.items()]
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


@pytest.fixture(scope='session')
def trained(tmp_path_factory, synthetic_root) -> dict:
    """The tiny config trained for 2 epochs through tools/train.py (shared
    by the end-to-end and the visualisation tests)."""
    tmp = tmp_path_factory.mktemp('e2e')
    config = write_config(tmp / 'tiny.py', synthetic_root)
    work_dir = tmp / 'work'
    result = run_tool(['tools/train.py', config, '--work-dir', str(work_dir)])
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(config=config, work_dir=work_dir, tmp=tmp, log=result.stdout)


# --- Small models and batches shared by several test modules ---


def build_model(num_query_groups: int = 1,
                group_assigner: bool = True) -> ConditionalDETR:
    """The quick-start model with ``num_query_groups`` groups of 20 queries,
    random weights (no zero-initialised layer hides a difference)."""
    cfg = quick_cfg().model
    cfg.num_query_groups = num_query_groups
    if group_assigner:
        cfg.train_cfg.assigner.type = 'GroupHungarianAssigner'
    model = MODELS.build(cfg)
    randomize_(model)
    return model


def without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.
        elif isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.
    return model


def batch_with_boxes(model):
    """Two images of different sizes with 3 and 2 ground-truth boxes."""
    inputs, samples = parity_batch(model)
    boxes = ([[10., 20., 90., 120.], [100., 30., 150., 90.],
              [20., 130., 70., 200.]], [[5., 5., 60., 50.],
                                        [40., 60., 120., 210.]])
    for sample, image_boxes in zip(samples, boxes):
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor(image_boxes),
            labels=torch.arange(len(image_boxes)) % 3)
    return inputs, samples


def losses_and_gradients(model, inputs, samples, seed: int = 5):
    """One training forward and backward of ``model`` with the random state
    seeded: the losses and every parameter's gradient by name."""
    model.zero_grad()
    torch.manual_seed(seed)
    losses = model.loss(inputs, copy.deepcopy(samples))
    sum(losses.values()).backward()
    return losses, {
        name: param.grad.clone()
        for name, param in model.named_parameters() if param.grad is not None
    }
