"""What every converter shares: renaming by rules, checking the result
against the model a config builds, reporting and writing the checkpoint.

A converter turns a source state dict into our parameter names
(:class:`Conversion`); :func:`finish` then compares it with the state dict
of the model that ``config`` builds, so "unfilled" means exactly the keys
``tools/test.py`` would report as missing, and refuses to write a partial
checkpoint unless asked to.
"""
import argparse
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import Tensor

from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.checkpoint_file import check_output_path
from mmdet_cdetr.utils.errors import (ArgumentError, CheckpointError,
                                      InputNotFoundError)
from .checkpoint_format import read_checkpoint
from .coco_labels import COCO_CLASSES

# The package's configs: a link to the checkout's configs/ in an editable
# install, a copy in a wheel.
CONFIGS_DIR = Path(__file__).resolve().parents[1] / '.mim' / 'configs'
# Frozen BatchNorm (official, HuggingFace) has no batch counter; our BN has.
BN_COUNTER = 'num_batches_tracked'

Replacement = Union[str, Callable[[re.Match], str]]
Rule = Tuple[str, Replacement]


class IncompleteConversionError(CheckpointError):
    """The converted checkpoint would not fill the whole model."""


@dataclass
class Conversion:
    """A source checkpoint in our parameter names.

    Attributes:
        state_dict: Tensors under our (mmdet's) names.
        unused: Source keys that no rule used.
        notes: Facts worth telling the user (e.g. the label mapping).
    """
    state_dict: Dict[str, Tensor]
    unused: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


@dataclass
class ConversionReport:
    """How a conversion fits the model built from the target config."""
    converted: int
    unused: List[str]
    unfilled: List[str]
    mismatched: List[str]
    bn_counters: int
    notes: List[str]

    @property
    def complete(self) -> bool:
        return not (self.unfilled or self.mismatched)

    def summary(self) -> str:
        lines = [f'converted tensors: {self.converted}'] + self.notes
        if self.bn_counters:
            lines.append(f'BatchNorm counters set to 0 (frozen BatchNorm in '
                         f'the source has none): {self.bn_counters}')
        lines.append(f'unused source keys: {_listing(self.unused)}')
        lines.append(f'unfilled model keys: {_listing(self.unfilled)}')
        if self.mismatched:
            lines.append(f'shape mismatches: {_listing(self.mismatched)}')
        return '\n'.join(lines)


def _listing(keys: Sequence[str], limit: int = 12) -> str:
    if not keys:
        return '0'
    shown = ', '.join(keys[:limit])
    more = f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''
    return f'{len(keys)}: {shown}{more}'


def rename(state_dict: Dict[str, Tensor], rules: Sequence[Rule]) -> Conversion:
    """Rename keys by the first rule whose pattern matches the whole key.

    Args:
        state_dict: Source tensors.
        rules: ``(pattern, replacement)`` pairs for :func:`re.sub`; the
            replacement is a template or a function of the match.
    """
    renamed, unused = {}, []
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            if re.fullmatch(pattern, key):
                renamed[re.sub(pattern, replacement, key)] = value
                break
        else:
            unused.append(key)
    return Conversion(renamed, unused)


def model_state_shapes(config: str) -> Dict[str, torch.Size]:
    """Parameter and buffer shapes of the model ``config`` builds."""
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet_cdetr'))
    model = MODELS.build(cfg.model)
    return {key: value.shape for key, value in model.state_dict().items()}


def fit_to_model(
        conversion: Conversion,
        config: str) -> Tuple['OrderedDict[str, Tensor]', ConversionReport]:
    """Order ``conversion`` like the model of ``config`` and report the
    keys it leaves unused or unfilled."""
    shapes = model_state_shapes(config)
    state: 'OrderedDict[str, Tensor]' = OrderedDict()
    unfilled, mismatched, bn_counters = [], [], 0
    for key, shape in shapes.items():
        value = conversion.state_dict.get(key)
        if value is None and key.endswith(BN_COUNTER):
            value, bn_counters = torch.tensor(0), bn_counters + 1
        if value is None:
            unfilled.append(key)
        elif value.shape != shape:
            mismatched.append(f'{key} {tuple(value.shape)} in the source, '
                              f'{tuple(shape)} in the model')
        else:
            state[key] = value.detach().clone().contiguous()
    unexpected = [key for key in conversion.state_dict if key not in shapes]
    report = ConversionReport(
        converted=len(state) - bn_counters,
        unused=conversion.unused +
        [f'{key} (as named in the model)' for key in unexpected],
        unfilled=unfilled,
        mismatched=mismatched,
        bn_counters=bn_counters,
        notes=conversion.notes)
    return state, report


def finish(conversion: Conversion,
           config: str,
           out: str,
           meta: dict,
           allow_partial: bool = False) -> ConversionReport:
    """Check ``conversion`` against the model of ``config`` and write
    ``{'meta': meta, 'state_dict': ...}`` to ``out`` (MMEngine's layout).

    Raises:
        IncompleteConversionError: The model would not be fully filled and
            ``allow_partial`` is False; names what is missing.
    """
    state, report = fit_to_model(conversion, config)
    if not report.complete and not allow_partial:
        problems = [f'unfilled model keys {_listing(report.unfilled)}']
        if report.mismatched:
            problems.append(f'shape mismatches {_listing(report.mismatched)}')
        if report.unused:
            problems.append(f'unused source keys {_listing(report.unused)}')
        raise IncompleteConversionError(
            f'refusing to write a partial checkpoint for {config}: ' +
            '; '.join(problems) + ' (pass --allow-partial to write it '
            'anyway, or --config for the matching model)')
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(meta=meta, state_dict=state), out)
    return report


def load_checkpoint_file(path: str) -> dict:
    """A checkpoint loaded with ``weights_only=True``
    (:func:`~.checkpoint_format.read_checkpoint`): a missing or damaged
    file is reported as such."""
    return read_checkpoint(path)


def zoo_config(depth: int, dc5: bool = False) -> str:
    """Our COCO config for a ResNet depth (50 or 101) and DC5 or not."""
    name = {
        (50, False): 'conditional_detr_r50_8x2_50e_coco.py',
        (50, True): 'conditional_detr_r50_dc5_8x1_50e_coco.py',
        (101, False): 'conditional_detr_r101_8x2_50e_coco.py',
        (101, True): 'conditional_detr_r101_dc5_8x1_50e_coco.py',
    }.get((depth, dc5))
    if name is None:
        raise ArgumentError(f'no config of ours for ResNet-{depth}; pass '
                            '--config for the model the checkpoint fits')
    path = CONFIGS_DIR / 'conditional_detr' / name
    if not path.is_file():
        raise InputNotFoundError(f'config not found: {path}; pass --config')
    return str(path.resolve())


def resnet_depth(num_blocks: Sequence[int]) -> int:
    """ResNet depth from the number of blocks per stage (50 or 101)."""
    depths = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
    depth = depths.get(tuple(num_blocks))
    if depth is None:
        raise CheckpointError(
            f'unknown ResNet with {tuple(num_blocks)} blocks '
            'per stage; pass --config for its model')
    return depth


def converter_parser(description: str, source: str) -> argparse.ArgumentParser:
    """Arguments every converter CLI takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help=source)
    parser.add_argument(
        'dst',
        help='output checkpoint (.pth) for '
        'tools/test.py and tools/train.py --cfg-options '
        'load_from=...')
    parser.add_argument(
        '--config',
        help='config of the model the checkpoint is for; its model '
        'decides which keys must be filled (default: our COCO config '
        'matching the source backbone)')
    parser.add_argument(
        '--allow-partial',
        action='store_true',
        help='write the checkpoint even if it leaves model keys unfilled')
    parser.add_argument(
        '--force',
        action='store_true',
        help='overwrite DST if it exists (never the source)')
    return parser


def convert_and_save(conversion: Conversion,
                     args: argparse.Namespace,
                     config: str,
                     source_kind: str,
                     dataset_meta: Optional[dict] = None) -> None:
    """Check against the model of ``config``, report and write a
    conversion as the converter CLIs do (``args`` from
    :func:`converter_parser`); DST is never the source, and an existing
    DST only with ``--force``."""
    check_output_path(args.dst, [args.src], args.force)
    meta = dict(
        dataset_meta=dataset_meta or dict(classes=COCO_CLASSES),
        converted_from=dict(kind=source_kind, path=str(args.src)),
        config=str(config))
    report = finish(conversion, config, args.dst, meta, args.allow_partial)
    print(report.summary())
    if not report.complete:
        print('warning: the checkpoint is partial (--allow-partial)')
    print(f'saved {args.dst} for {config}')
