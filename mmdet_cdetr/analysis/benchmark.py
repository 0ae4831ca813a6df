"""Side-by-side benchmark of DETR-family detectors.

Every model is built from its config with random initial weights (no
downloads); where a parameter's name and shape match the first model's, its
weights are copied, so ours and mmdet's built-in Conditional DETR run with
identical weights. All models see the same random images and boxes. Timed
repetitions are interleaved across models after warm-up, so a change of
machine load hits all models alike; medians and the min-max spread are
reported.

Measured per model:

* ``train``: a full training step (forward, losses, backward, gradient
  clipping, optimiser step: the config's ``optim_wrapper``, as
  ``tools/train.py`` builds it), ``batch_size`` images of ``train_size``;
* ``train_th``: forward + backward of the transformer and head alone
  (encoder, decoder, matching, losses) on fixed backbone features;
* ``infer``: inference of one ``infer_size`` image (``mode='predict'``),
  by a copy of the model prepared as ``tools/test.py`` prepares it
  (with the speed-ups, :func:`~mmdet_cdetr.speedup.apply_speedups` with
  ``inference=True``), whose weights the training steps leave unchanged;
* ``peak_mem``: the peak memory of one training step above what was in use
  before it: on CUDA, tensor memory (``torch.cuda.max_memory_allocated``);
  on the CPU, the process's resident memory (Linux's ``VmHWM``, reset
  before the step), which includes what the allocator keeps;
* parameters and FLOPs (mmengine's ``FlopAnalyzer``, inference at
  ``infer_size``), in total and for the transformer + head (everything but
  the backbone and neck).

A bench with ``amp`` runs every step under autocast (the same model, so
``--amp`` rows sit beside the float32 ones of the same run). A bench with
``speedups`` is given a model with the training speed-ups applied
(:func:`~mmdet_cdetr.speedup.apply_speedups`) and prepares its inference
copy with the inference ones.
"""
import copy
import functools
import inspect
import re
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.structures import DetDataSample
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner.amp import autocast
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.speedup import apply_speedups
from mmdet_cdetr.utils import init_weights_quietly

# Modules that are not part of the transformer + head.
BACKBONE_PREFIXES = ('backbone', 'neck')
# The steps DetectorBench times, in the order of the tables.
STEPS = ('train', 'train_th', 'infer')


def load_config(config: str) -> Config:
    """``config``: a path, or ``package::path`` such as ``mmdet::detr/...``."""
    return get_config(config) if '::' in config else Config.fromfile(config)


def build_detector(config: str, device: torch.device) -> nn.Module:
    """Build a detector from ``config`` (see :func:`load_config`) with
    random weights: the backbone's pretrained ``init_cfg`` is dropped,
    nothing is downloaded."""
    cfg = load_config(config)
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(cfg.model)
    init_weights_quietly(model)
    return model.to(device)


def optim_wrapper_of(config: str, model: nn.Module) -> OptimWrapper:
    """The optimiser wrapper of ``config`` for ``model`` (optimiser, its
    settings, parameter-wise learning rates, gradient clipping), float32."""
    cfg = load_config(config)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return build_optim_wrapper(model, cfg.optim_wrapper)


def copy_matching_weights(model: nn.Module, source: Dict[str, Tensor]) -> int:
    """Copy every tensor of ``source`` whose name and shape ``model`` has;
    returns how many were copied."""
    state = model.state_dict()
    matching = {
        name: value
        for name, value in source.items()
        if name in state and state[name].shape == value.shape
    }
    model.load_state_dict(matching, strict=False)
    return len(matching)


def make_batch(
        model: nn.Module,
        batch_size: int,
        size: Tuple[int, int],
        num_gts: int,
        num_classes: int,
        training: bool,
        seed: int = 0,
        mixed_sizes: bool = False) -> Tuple[Tensor, List[DetDataSample]]:
    """Random uint8 images and boxes, through the model's preprocessor
    (which pads the batch to its largest image). With ``mixed_sizes``, image
    ``i`` is ``1 - i / 8`` of ``size`` in each side, as the images of a test
    batch differ in size after the resize that keeps their aspect ratio."""
    generator = torch.Generator().manual_seed(seed)
    images, samples = [], []
    for index in range(batch_size):
        shrink = index / 8 if mixed_sizes else 0.
        height, width = (round(side * (1 - shrink)) for side in size)
        images.append(
            torch.randint(
                0,
                256, (3, height, width),
                dtype=torch.uint8,
                generator=generator))
        centres = torch.rand(num_gts, 2, generator=generator)
        sizes = 0.05 + 0.45 * torch.rand(num_gts, 2, generator=generator)
        boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], 1)
        boxes = boxes.clamp(0, 1) * torch.tensor(
            [width, height, width, height])
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(height, width),
                ori_shape=(height, width),
                scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(
            bboxes=boxes,
            labels=torch.randint(
                num_classes, (num_gts, ), generator=generator))
        samples.append(sample)
    data = model.data_preprocessor(
        dict(inputs=images, data_samples=samples), training)
    return data['inputs'], data['data_samples']


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    fn()
    _synchronize(device)
    return time.perf_counter() - start


def peak_memory(fn: Callable[[], None], device: torch.device) -> int:
    """Peak bytes of memory ``fn`` used above what was in use before it:
    CUDA's tensor memory, or on the CPU the resident memory of the process
    (0 where Linux's ``/proc/self`` is missing)."""
    if device.type == 'cuda':
        _synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        with open('/proc/self/clear_refs', 'w') as clear_refs:
            clear_refs.write('5')  # resets VmHWM to the current VmRSS
    except OSError:
        return 0
    before = _resident_kib('VmRSS')
    fn()
    # Linux syncs the counters behind VmHWM lazily: a step that allocated
    # nothing new can read below ``before``, which means no growth.
    return max(0, _resident_kib('VmHWM') - before) * 1024


def _resident_kib(field: str) -> int:
    with open('/proc/self/status') as status:
        return int(re.search(rf'{field}:\s+(\d+)', status.read()).group(1))


def sdpa_flop_jit(inputs: list, outputs: list) -> int:
    """Multiply-adds of ``aten::scaled_dot_product_attention`` (q k^T and
    weights x v), which mmengine's counter does not know: without this,
    models on the fused kernel would look cheaper than they are."""
    *batch, queries, qk_dims = get_shape(inputs[0])
    keys, value_dims = get_shape(inputs[2])[-2:]
    heads = 1
    for size in batch:
        heads *= size
    return heads * queries * keys * (qk_dims + value_dims)


class DetectorBench:
    """One model with its inputs and the steps to time."""

    def __init__(self,
                 name: str,
                 model: nn.Module,
                 device: torch.device,
                 train_batch: Tuple[int, Tuple[int, int]],
                 infer_size: Tuple[int, int],
                 num_gts: int,
                 num_classes: int,
                 optim_wrapper: OptimWrapper,
                 amp: bool = False,
                 speedups: bool = False) -> None:
        self.name, self.model, self.device = name, model, device
        self.optim_wrapper, self.amp = optim_wrapper, amp
        batch_size, train_size = train_batch
        model.train()
        self.inputs, self.samples = make_batch(model, batch_size, train_size,
                                               num_gts, num_classes, True)
        with torch.no_grad():
            self.feats = tuple(feat.detach()
                               for feat in model.extract_feat(self.inputs))
        self.infer_inputs, self.infer_samples = make_batch(
            model, 1, infer_size, num_gts, num_classes, False, seed=1)
        self.infer_model = copy.deepcopy(model).eval()
        if speedups:
            apply_speedups(self.infer_model, inference=True)

    def train_step(self) -> None:
        """Forward, losses, and the optimiser wrapper's update (backward,
        clipping, step, zeroed gradients)."""
        losses = self.model(self.inputs, self.samples, mode='loss')
        loss, _ = self.model.parse_losses(losses)
        self.optim_wrapper.update_params(loss)

    def transformer_head_step(self) -> None:
        """Forward + backward of everything after the neck."""
        head_inputs = self.model.forward_transformer(self.feats, self.samples)
        losses = self.model.bbox_head.loss(
            **head_inputs, batch_data_samples=self.samples)
        loss, _ = self.model.parse_losses(losses)
        loss.backward()
        self.optim_wrapper.zero_grad(set_to_none=True)

    def inference(self) -> None:
        with torch.no_grad():
            self.infer_model(
                self.infer_inputs, self.infer_samples, mode='predict')

    def steps(self) -> Dict[str, Callable[[], None]]:
        """The timed steps by their names in :data:`STEPS`."""
        steps = (self.train_step, self.transformer_head_step, self.inference)
        return {
            name: functools.partial(self._in_precision, step)
            for name, step in zip(STEPS, steps)
        }

    def _in_precision(self, step: Callable[[], None]) -> None:
        """``step`` in float32, or under autocast as ``--amp`` trains (bf16
        on the CPU, fp16 on GPUs; the loss is not scaled for timing)."""
        with autocast(device_type=self.device.type, enabled=self.amp):
            step()

    def complexity(self) -> Dict[str, float]:
        """Parameters and inference FLOPs (multiply-adds), total and
        transformer + head; and the multiply-adds of the training forward
        pass (all query groups), whose step costs about three times them."""
        params = dict(self.model.named_parameters())
        th_params = sum(p.numel() for name, p in params.items()
                        if not name.startswith(BACKBONE_PREFIXES))
        self.model.eval()
        by_module = flops_by_module(self.model, self.infer_inputs,
                                    self.infer_samples)
        self.model.train()
        train_forward = flops_by_module(self.model, self.inputs,
                                        self.samples)['']
        backbone_flops = sum(by_module[f'model.{prefix}']
                             for prefix in BACKBONE_PREFIXES)
        total = by_module['']
        return dict(
            params=sum(p.numel() for p in params.values()),
            params_th=th_params,
            flops=total,
            flops_th=total - backbone_flops,
            train_forward_flops=train_forward)


def flops_by_module(model: nn.Module, inputs: Tensor,
                    samples: list) -> Dict[str, int]:
    """mmengine's multiply-add count of the ``mode='tensor'`` forward, per
    module name (``''``: the whole model). Traced without autograd: the
    count needs none, and activation checkpointing (``with_cp``), which
    only runs where gradients are recorded, cannot be traced."""
    analyzer = FlopAnalyzer(_TensorForward(model, samples), (inputs, ))
    analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        return analyzer.by_module()


class _TensorForward(nn.Module):
    """The detector's ``mode='tensor'`` forward (backbone, neck, transformer,
    head) with fixed data samples, as the FLOP counter needs a plain module
    call.

    Written out rather than called: mmdet 3.3's DETR ``_forward`` hands every
    transformer output to the head, and ``DeformableDETRHead.forward``
    refuses the encoder's proposals, so the head gets only the arguments its
    ``forward`` takes.
    """

    def __init__(self, model: nn.Module, samples: list) -> None:
        super().__init__()
        self.model, self.samples = model, samples
        self.head_args = set(
            inspect.signature(model.bbox_head.forward).parameters)

    def forward(self, inputs: Tensor):
        head_inputs = self.model.forward_transformer(
            self.model.extract_feat(inputs), self.samples)
        return self.model.bbox_head(**{
            k: v
            for k, v in head_inputs.items() if k in self.head_args
        })


def run_benchmark(benches: Sequence[DetectorBench],
                  repeats: int,
                  warmup: int,
                  log: Optional[Callable[[str], None]] = None) -> dict:
    """Interleaved timing, then peak memory and complexity per model.

    Returns:
        dict: model name -> measurements (seconds, bytes, counts).
    """
    samples: Dict[str, Dict[str, List[float]]] = {
        bench.name: {
            step: []
            for step in bench.steps()
        }
        for bench in benches
    }
    for rep in range(warmup + repeats):
        for bench in benches:
            for step, fn in bench.steps().items():
                elapsed = _timed(fn, bench.device)
                if rep >= warmup:
                    samples[bench.name][step].append(elapsed)
        if log:
            log(f'repetition {rep + 1}/{warmup + repeats} done' +
                (' (warm-up)' if rep < warmup else ''))
    results = {}
    for bench in benches:
        result = {
            step:
            dict(
                median=statistics.median(values),
                min=min(values),
                max=max(values),
                values=values)
            for step, values in samples[bench.name].items()
        }
        result['peak_mem'] = peak_memory(bench.steps()['train'], bench.device)
        result.update(bench.complexity())
        results[bench.name] = result
    return results


def paired_ratios(results: dict, numerator: str,
                  denominator: str) -> Dict[str, dict]:
    """Per step, the time of ``numerator`` over that of ``denominator`` in
    each repetition, median and range. Both ran in the same round of
    :func:`run_benchmark`, so a machine load that drifts between rounds
    hits both sides of each ratio alike; a ratio of medians taken over
    different rounds does not cancel it."""
    ratios = {}
    for step in STEPS:
        values = [
            top / bottom
            for top, bottom in zip(results[numerator][step]['values'],
                                   results[denominator][step]['values'])
        ]
        ratios[step] = dict(
            median=statistics.median(values),
            min=min(values),
            max=max(values),
            values=values)
    return ratios


def format_ratios(ratios: Dict[str, Dict[str, dict]], title: str) -> str:
    """Markdown table of :func:`paired_ratios` by row name: median
    (min-max) per step."""
    rows = [
        f'| {title} | train step | T+H fwd+bwd | inference |',
        '|---|---|---|---|'
    ]
    for name, steps in ratios.items():
        cells = [
            f'{s["median"]:.2f} ({s["min"]:.2f}-{s["max"]:.2f})'
            for s in (steps[step] for step in STEPS)
        ]
        rows.append('| ' + ' | '.join([name] + cells) + ' |')
    return '\n'.join(rows)


def format_table(results: dict, baseline: str) -> str:
    """Markdown table; ratios are relative to the ``baseline`` model."""
    base = results[baseline]

    def time_cell(result: dict, key: str) -> str:
        r = result[key]
        return (f'{r["median"] * 1e3:.0f} ({r["min"] * 1e3:.0f}-'
                f'{r["max"] * 1e3:.0f}) | '
                f'{r["median"] / base[key]["median"]:.2f}x')

    header = [
        'model', 'params (M) total / T+H', 'GFLOPs total / T+H',
        'train step ms (min-max)', 'vs base', 'T+H fwd+bwd ms (min-max)',
        'vs base', 'inference ms (min-max)', 'vs base', 'peak mem MB',
        'vs base'
    ]
    rows = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for name, r in results.items():
        memory_ratio = (f'{r["peak_mem"] / base["peak_mem"]:.2f}x'
                        if base['peak_mem'] else '-')
        rows.append('| ' + ' | '.join([
            name, f'{r["params"] / 1e6:.2f} / {r["params_th"] / 1e6:.2f}',
            f'{r["flops"] / 1e9:.1f} / {r["flops_th"] / 1e9:.1f}',
            time_cell(r, 'train'),
            time_cell(r, 'train_th'),
            time_cell(r,
                      'infer'), f'{r["peak_mem"] / 2**20:.0f} | {memory_ratio}'
        ]) + ' |')
    return '\n'.join(rows)
