"""Checkpoints of other implementations, converted as MMEngine loads them.

MMEngine reads every checkpoint (``load_from``, the checkpoint of
``tools/test.py``, ``DetInferencer``'s weights, the ``Weights`` URLs of our
metafiles) through :class:`mmengine.runner.CheckpointLoader`, which picks a
loader by the path's scheme. Importing ``mmdet_cdetr`` puts ours in place
for local paths and ``http(s)://`` URLs: they read the file weights-only
(allowing the ``argparse.Namespace`` of the official training checkpoints
for that load only), tell its format from its keys
(:func:`~.checkpoint_format.checkpoint_format`) and convert a Conditional
DETR checkpoint of the official repository or of HuggingFace to our names
with the converters' own code. A released checkpoint therefore needs no
converted copy; a checkpoint of another implementation that cannot be
converted without more information is refused, naming the converter,
instead of loading nothing and detecting at random. Downloads are cached
where MMEngine's own http loader caches them (``checkpoints`` under
torch.hub's directory, ``$TORCH_HOME/hub``).
"""
import os
import os.path as osp
import struct
import urllib.error
from typing import Any, Callable, Dict, Mapping, Optional
from urllib.parse import urlparse

import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from mmdet_cdetr.utils.errors import CheckpointError, InputNotFoundError
from .checkpoint_format import (HUGGINGFACE, OFFICIAL, checkpoint_format,
                                read_checkpoint, state_dict_of)
from .coco_labels import COCO_CATEGORY_IDS, COCO_CLASSES

URL_SCHEMES = ('http://', 'https://')
# Weights file names shared by every HuggingFace model.
GENERIC_NAMES = ('model.safetensors', 'pytorch_model.bin')
# Conditional DETR formats converted as they are loaded.
CONVERTED_ON_LOAD = (OFFICIAL.name, HUGGINGFACE.name)
# BatchNorm statistics without a batch counter (the sources' frozen
# BatchNorm has none, ours has).
_RUNNING_MEAN = 'running_mean'
_BN_COUNTER = 'num_batches_tracked'


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL our loader downloads (http or https)."""
    return isinstance(path, str) and path.startswith(URL_SCHEMES)


def cache_path(url: str) -> str:
    """Where a download of ``url`` is kept: the file name of the URL in
    torch.hub's ``checkpoints`` directory, as MMEngine's (and torch's)
    ``load_url`` keeps it, so either finds the other's download. The
    file names every HuggingFace model has (``model.safetensors``) get the
    URL's path as a prefix, so that two models do not share a cached
    file."""
    path = urlparse(url).path
    name = osp.basename(path)
    if name in GENERIC_NAMES:
        name = '_'.join(part for part in path.split('/') if part)
    return osp.join(torch.hub.get_dir(), 'checkpoints', name)


def download(url: str) -> str:
    """The local copy of ``url``, downloaded unless cached; in a
    distributed run rank 0 downloads first (as MMEngine's http loader).

    Raises:
        CheckpointError: The download failed (names the URL and why).
    """
    rank, world_size = get_dist_info()
    if rank == 0:
        path = _download(url)
    if world_size > 1:
        barrier()
        if rank > 0:
            path = _download(url)
    return path


def _download(url: str) -> str:
    path = cache_path(url)
    if osp.isfile(path):
        return path
    os.makedirs(osp.dirname(path), exist_ok=True)
    print_log(f'downloading {url} to {path}', logger='current')
    try:
        # torch writes to a temporary file and renames it when complete:
        # an interrupted download leaves no truncated file in the cache.
        torch.hub.download_url_to_file(url, path, progress=os.isatty(2))
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, 'reason', None) or err
        raise CheckpointError(
            f'cannot download checkpoint {url}: {reason}') from err
    return path


def local_copy(path: str) -> str:
    """``path`` itself, or the cached download of a URL."""
    return download(path) if is_url(path) else path


def is_safetensors(path: str) -> bool:
    """Whether ``path`` is a safetensors file (HuggingFace's weights): an
    8-byte header length, then a JSON header."""
    with open(path, 'rb') as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b'{':
        return False
    return struct.unpack('<Q', head[:8])[0] < osp.getsize(path)


def read_any(path: str,
             map_location: Any = 'cpu',
             mmap: Optional[bool] = None) -> dict:
    """A checkpoint file (PyTorch or safetensors) as a dict, loaded
    weights-only (:func:`~.checkpoint_format.read_checkpoint`)."""
    if not osp.isfile(path):
        raise InputNotFoundError(f'checkpoint not found: {path}')
    if is_safetensors(path):
        from safetensors.torch import load_file
        return dict(load_file(path))
    return read_checkpoint(path, map_location=map_location, mmap=mmap)


def coco_id2label() -> Dict[int, str]:
    """The class of each logit of a 91-logit COCO classifier (the official
    repository's and the hub's ``microsoft/conditional-detr-resnet-*``):
    one per COCO category id, 'N/A' in the gaps."""
    id2label = {row: 'N/A' for row in range(max(COCO_CATEGORY_IDS) + 1)}
    id2label.update(zip(COCO_CATEGORY_IDS, COCO_CLASSES))
    return id2label


def _convert_official(state: Mapping, source: str) -> dict:
    from .official import convert_official
    return convert_official(dict(state)).state_dict


def _convert_huggingface(state: Mapping, source: str) -> dict:
    from .huggingface import convert_huggingface
    logits = len(state.get('class_labels_classifier.weight', ()))
    if logits != len(coco_id2label()):
        raise CheckpointError(
            f'it has {logits} class logits, not the 91 COCO logits of the '
            'released models, and which is which class is in its '
            'config.json: convert it with python tools/model_converters/'
            f'{HUGGINGFACE.converter} {source} OUT.pth --hf-config '
            'config.json')
    return convert_huggingface(dict(state), coco_id2label()).state_dict


_CONVERTERS: Dict[str, Callable[[Mapping, str], dict]] = {
    OFFICIAL.name: _convert_official,
    HUGGINGFACE.name: _convert_huggingface,
}


def add_bn_counters(state: Dict[str, Any]) -> None:
    """A zero batch counter beside each BatchNorm's statistics that has
    none, so that the converted checkpoint fills our BatchNorm layers."""
    for key in list(state):
        if key.endswith(_RUNNING_MEAN):
            counter = key[:-len(_RUNNING_MEAN)] + _BN_COUNTER
            state.setdefault(counter, torch.tensor(0))


def as_ours(checkpoint: Mapping, source: str) -> Mapping:
    """``checkpoint`` (read from ``source``) as our model loads it.

    MMDetection-named checkpoints (ours, the model zoo's) and checkpoints of
    unknown layout (e.g. a backbone's) are returned as they are; official
    and HuggingFace Conditional DETR checkpoints are converted, with COCO's
    class names as their ``dataset_meta``.

    Raises:
        CheckpointError: A checkpoint named for another implementation
            that cannot be converted here (another model, a GroupDETR
            checkpoint, a HuggingFace one of other classes): names what it
            is and the converter to run.
    """
    found = checkpoint_format(checkpoint)
    if found.layout not in ('official', 'huggingface'):
        return checkpoint
    convert = _CONVERTERS.get(found.name)
    if convert is None:
        raise CheckpointError(found.advice(source))
    try:
        state = convert(state_dict_of(checkpoint), source)
    except CheckpointError as err:
        raise CheckpointError(
            f'{source} is {found.description}, which does not convert to '
            f'this project\'s names: {err}') from err
    add_bn_counters(state)
    print_log(
        f'{source} is {found.description}: converted to this project\'s '
        'names in memory',
        logger='current')
    return dict(
        meta=dict(
            dataset_meta=dict(classes=COCO_CLASSES),
            converted_from=dict(kind=found.name, path=source)),
        state_dict=state)


def load_as_ours(path: str,
                 map_location: Any = 'cpu',
                 mmap: Optional[bool] = None) -> Mapping:
    """The checkpoint at ``path`` (a file or an http(s) URL) as our model
    loads it (:func:`as_ours`)."""
    return as_ours(read_any(local_copy(path), map_location, mmap), path)


def _load_local(filename: str, map_location: Any = None) -> Mapping:
    """MMEngine's loader for local paths, converting as it loads."""
    return load_as_ours(osp.expanduser(filename), map_location, mmap=False)


def _load_http(filename: str, map_location: Any = None) -> Mapping:
    """MMEngine's loader for http(s) URLs, converting as it loads."""
    return load_as_ours(filename, map_location, mmap=False)


# MMEngine prints the loader's name without its first 10 characters
# ("load_from_"): "Loads checkpoint by local backend".
_load_local.__name__ = 'load_from_local'
_load_http.__name__ = 'load_from_http'


def register_checkpoint_loaders() -> None:
    """Our loaders in place of MMEngine's for local paths and http(s)
    URLs (MMEngine's extension point; its other schemes are left alone)."""
    CheckpointLoader.register_scheme('', _load_local, force=True)
    CheckpointLoader.register_scheme(URL_SCHEMES, _load_http, force=True)
