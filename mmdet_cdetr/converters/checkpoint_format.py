"""Which implementation and model a checkpoint holds, told by its keys.

Every tool that reads a checkpoint asks :func:`checkpoint_format` first, so
that a checkpoint of another implementation is reported as what it is, with
the converter that makes it ours, instead of as missing keys, AP 0, or (for
the official repository, whose training checkpoints pickle their
``argparse.Namespace``) "a pickled object not on the allow-list". The answer
also tells later code which converter to run in memory.

Layouts told apart (DESIGN.md; each converter's module documents its own):
MMDetection's names (``bbox_head.*``, ``decoder.layers.*``: ours and
MMDetection's model zoo), the DETR-family repositories' (``backbone.0.body``,
``transformer.*``, ``class_embed``) and HuggingFace's (``model.*``,
``class_labels_classifier``). Within each, Conditional DETR has the
reference-point MLP (``ref_point_head``) and no anchor queries, DAB-DETR has
4-d anchor queries (``refpoint_embed``, ``query_refpoint_embeddings``,
``ref_anchor_head``), Deformable DETR has ``sampling_offsets``, and DETR has
none of these.
"""
import argparse
import pickle
import zipfile
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

from mmdet_cdetr.utils.checkpoint_file import check_checkpoint_file
from mmdet_cdetr.utils.checkpoint_safety import refused_checkpoint
from mmdet_cdetr.utils.errors import CheckpointError
from mmdet_cdetr.utils.torch_compat import load_weights_only

CONVERTERS = 'tools/model_converters/'
# Queries of the official Conditional DETR (its GroupDETR branch: K x 300).
OFFICIAL_NUM_QUERIES = 300


@dataclass(frozen=True)
class CheckpointFormat:
    """What a checkpoint is.

    Attributes:
        name: ``ours``, ``mmdet``, ``official``, ``official_group_detr``,
            ``huggingface``, ``detr``, ``dab_detr``, ``deformable_detr``
            or ``unknown``.
        description: What it is, in words, for messages.
        layout: Whose parameter names it uses: ``mmdet`` (loads into an
            MMDetection model of the same kind as it is), ``official``,
            ``huggingface``, or '' (unknown).
        converter: The script of ``tools/model_converters/`` that converts
            it for our model, or None (loads as it is, or cannot be).
    """
    name: str
    description: str
    layout: str
    converter: Optional[str] = None

    @property
    def loads_directly(self) -> bool:
        """Whether our model loads it as it is (MMDetection's names)."""
        return self.name in ('ours', 'mmdet')

    def advice(self, path: str) -> str:
        """What to do with the checkpoint at ``path`` instead of loading."""
        if self.converter:
            return (f'{path} is {self.description}: convert it first with '
                    f'python {CONVERTERS}{self.converter} {path} OUT.pth '
                    '(docs/converting_weights.md)')
        if self.name == 'unknown':
            return (f'{path} is not a Conditional DETR checkpoint this '
                    'project knows (neither ours, MMDetection\'s, the '
                    'official repository\'s nor HuggingFace\'s)')
        return (f'{path} is {self.description}, not Conditional DETR: no '
                'config of this project builds that model')


OURS = CheckpointFormat('ours',
                        'a Conditional DETR checkpoint of this project',
                        'mmdet')
MMDET = CheckpointFormat(
    'mmdet', 'a Conditional DETR checkpoint of MMDetection (model zoo)',
    'mmdet', 'mmdet_zoo2mmdet.py')
OFFICIAL = CheckpointFormat(
    'official', 'a checkpoint of the official Conditional DETR repository '
    '(Atten4Vis/ConditionalDETR)', 'official', 'official2mmdet.py')
OFFICIAL_GROUP_DETR = CheckpointFormat(
    'official_group_detr', 'a checkpoint of the GroupDETR branch of the '
    'official Conditional DETR repository', 'official', 'official2mmdet.py')
HUGGINGFACE = CheckpointFormat(
    'huggingface', 'a HuggingFace ConditionalDetrForObjectDetection '
    'checkpoint', 'huggingface', 'huggingface2mmdet.py')
UNKNOWN = CheckpointFormat('unknown', 'a checkpoint of unknown layout', '')
_OTHER_MODELS = dict(
    detr='DETR',
    dab_detr='DAB-DETR',
    deformable_detr='Deformable DETR',
)
_LAYOUTS = dict(
    mmdet='in MMDetection\'s names',
    official='of its official repository',
    huggingface='of HuggingFace transformers')


def state_dict_of(checkpoint: Mapping) -> Mapping:
    """The parameters of a loaded checkpoint: under ``state_dict``
    (MMEngine), ``model`` (the official repositories) or the checkpoint
    itself (HuggingFace's weights files, bare state dicts)."""
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def _rows(value: Any) -> Tuple[int, ...]:
    return tuple(getattr(value, 'shape', ()))


def checkpoint_format(checkpoint: Mapping) -> CheckpointFormat:
    """What ``checkpoint`` (as loaded, or its state dict) is, from its keys
    (and the shape of the query embedding, for GroupDETR and DAB-DETR)."""
    state = state_dict_of(checkpoint)
    keys = [
        key[len('module.'):] if key.startswith('module.') else key
        for key in state if isinstance(key, str)
    ]
    if not keys:
        return UNKNOWN
    layout = _layout(keys)
    if layout is None:
        return UNKNOWN
    model = _model(keys, state)
    if model != 'conditional_detr':
        return CheckpointFormat(
            model, f'a {_OTHER_MODELS[model]} checkpoint {_LAYOUTS[layout]}',
            layout)
    if layout == 'huggingface':
        return HUGGINGFACE
    if layout == 'official':
        rows = _rows(state.get('query_embed.weight'))
        if rows and rows[0] > OFFICIAL_NUM_QUERIES and (
                rows[0] % OFFICIAL_NUM_QUERIES == 0):
            return OFFICIAL_GROUP_DETR
        return OFFICIAL
    meta = checkpoint.get('meta') if isinstance(
        checkpoint.get('meta'), Mapping) else {}
    if meta.get('converted_from') or 'mmdet_cdetr' in str(meta.get('cfg', '')):
        return OURS
    return MMDET


# The first parameter-name prefixes of each layout, tried in this order
# per key (the official ResNet is under backbone.0.body, ours backbone.).
_PREFIXES = (
    ('huggingface', ('model.', 'class_labels_classifier.', 'bbox_predictor.')),
    ('official', ('transformer.', 'backbone.0.', 'class_embed.', 'bbox_embed.',
                  'query_embed.', 'input_proj.', 'refpoint_embed.')),
    ('mmdet', ('bbox_head.', 'decoder.', 'encoder.', 'backbone.', 'neck.',
               'query_embedding.')),
)


def _layout(keys: Sequence[str]) -> Optional[str]:
    """The layout most keys are named in, or None."""
    counts = Counter()
    for key in keys:
        for layout, prefixes in _PREFIXES:
            if key.startswith(prefixes):
                counts[layout] += 1
                break
    return counts.most_common(1)[0][0] if counts else None


def _model(keys: Sequence[str], state: Mapping) -> str:
    """``conditional_detr``, ``dab_detr``, ``deformable_detr`` or
    ``detr``."""
    if any('sampling_offsets' in key for key in keys):
        return 'deformable_detr'
    anchors = ('refpoint_embed.', 'query_refpoint_embeddings.',
               'ref_anchor_head.')
    anchor_queries = _rows(state.get('query_embedding.weight'))[-1:] == (4, )
    if anchor_queries or any(anchor in key for key in keys
                             for anchor in anchors):
        return 'dab_detr'
    if any('ref_point_head.' in key for key in keys):
        return 'conditional_detr'
    return 'detr'


def _load(path: str, allow_namespace: bool, map_location: Any,
          mmap: bool) -> Any:
    return load_weights_only(
        path,
        map_location=map_location,
        extra_globals=[argparse.Namespace] if allow_namespace else None,
        mmap=mmap)


def read_checkpoint(path: str,
                    map_location: Any = 'cpu',
                    mmap: Optional[bool] = None) -> dict:
    """A complete checkpoint file, loaded weights-only with MMEngine's
    allow-list, plus the ``argparse.Namespace`` of the official
    repositories' training checkpoints (plain values only, allowed for
    that load only).

    Args:
        path: The file.
        map_location: As for ``torch.load``.
        mmap: Map the tensors instead of reading them (default: where the
            file is a zip archive, which is all a check needs).

    Raises:
        InputNotFoundError: ``path`` does not exist.
        CheckpointError: The file is damaged (names how) or holds another
            pickled object (names which).
    """
    check_checkpoint_file(path)
    if mmap is None:
        mmap = zipfile.is_zipfile(path)
    try:
        loaded = _load(path, False, map_location, mmap)
    except pickle.UnpicklingError as err:
        if 'argparse.Namespace' not in str(err):
            raise refused_checkpoint(path, err) from err
        try:
            loaded = _load(path, True, map_location, mmap)
        except pickle.UnpicklingError as again:
            raise refused_checkpoint(path, again) from again
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f'{path} holds a {type(loaded).__name__}, not '
                              'a checkpoint (a dict of tensors)')
    return dict(loaded)


def require_format(path: str, checkpoint: Mapping,
                   accepted: Sequence[CheckpointFormat]) -> CheckpointFormat:
    """The format of ``checkpoint`` (read from ``path``); a
    :class:`CheckpointError` saying what it is and how to convert it
    unless it is one of ``accepted`` (or unknown: the caller's own checks
    then name what is missing)."""
    found = checkpoint_format(checkpoint)
    if found.name in [fmt.name for fmt in accepted] + ['unknown']:
        return found
    if found.loads_directly:
        names = ' or '.join(fmt.description for fmt in accepted)
        raise CheckpointError(
            f'{path} is {found.description}, not {names}: it loads as it '
            'is (tools/test.py, load_from); no conversion is needed')
    raise CheckpointError(found.advice(path))


def check_loadable(path: str, checkpoint: Mapping) -> CheckpointFormat:
    """The format of ``checkpoint``, read from ``path``; a
    :class:`CheckpointError` naming it and its converter if it is named
    for another implementation and not converted as it is loaded
    (:mod:`.in_memory` converts the official repository's and
    HuggingFace's Conditional DETR). Whether an MMDetection-named one fits
    the model is left to the key and shape checks."""
    from .in_memory import CONVERTED_ON_LOAD
    found = checkpoint_format(checkpoint)
    if (found.layout in ('official', 'huggingface')
            and found.name not in CONVERTED_ON_LOAD):
        raise CheckpointError(found.advice(path))
    return found


def check_checkpoint(path: str) -> Mapping:
    """The checkpoint at ``path`` (a file, or an http(s) URL: downloaded
    into the cache MMEngine then loads it from) as our model loads it:
    complete, MMDetection-named or converted in memory. Every tool that
    loads a checkpoint into a model calls this first, so that a damaged
    file or one of another implementation is named before a model is
    built."""
    from .in_memory import load_as_ours
    return load_as_ours(path)
