"""Every call whose form depends on the installed torch, decided once here.

Supported: torch 2.1 (the newest with prebuilt mmcv 2.1.0 wheels) through
the newest release tested (``requirements.txt``). Each answer is read from
torch's version, never by catching the error of a whole feature.
"""
import logging
from typing import Any, Iterable, Optional

import torch
from mmengine.logging import print_log
from mmengine.utils import digit_version

TORCH_VERSION = digit_version(torch.__version__)

#: ``torch.serialization.add_safe_globals`` with ``(object, name)`` pairs
#: and the ``safe_globals`` context manager (torch 2.6). Before it, MMEngine
#: checkpoints (which pickle ``getattr`` references) cannot be allow-listed,
#: and ``torch.load`` unpickles in full by default anyway.
SAFE_WEIGHTS_ONLY_LOAD = TORCH_VERSION >= digit_version('2.6.0')

#: ``torch.onnx.export(dynamo=...)`` (torch 2.5; the default turned to the
#: dynamo exporter in 2.9).
ONNX_EXPORT_HAS_DYNAMO = TORCH_VERSION >= digit_version('2.5.0')

_warned_full_unpickling = False


def add_safe_globals(objects: Iterable[Any]) -> bool:
    """Add ``objects`` (callables or ``(callable, pickled name)`` pairs) to
    torch's weights-only allow-list; returns whether torch can hold them."""
    if not SAFE_WEIGHTS_ONLY_LOAD:
        return False
    torch.serialization.add_safe_globals(list(objects))
    return True


def load_weights_only(path: str,
                      map_location: Any = 'cpu',
                      extra_globals: Optional[list] = None,
                      mmap: bool = False) -> Any:
    """``torch.load`` restricted to tensors, MMEngine's checkpoint contents
    and ``extra_globals`` where torch can restrict it (2.6 and newer).

    Older torch cannot list what MMEngine checkpoints hold, so the file is
    unpickled in full (torch's own default there), and the first such load
    says so in the log."""
    if SAFE_WEIGHTS_ONLY_LOAD:
        with torch.serialization.safe_globals(list(extra_globals or [])):
            return torch.load(
                path, map_location=map_location, weights_only=True, mmap=mmap)
    global _warned_full_unpickling
    if not _warned_full_unpickling:
        _warned_full_unpickling = True
        print_log(
            f'torch {torch.__version__} cannot restrict unpickling to the '
            'contents of MMEngine checkpoints (torch 2.6 can): checkpoints '
            'are unpickled in full, as torch does by default; load only '
            'checkpoints you trust',
            logger='current',
            level=logging.WARNING)
    return torch.load(
        path, map_location=map_location, weights_only=False, mmap=mmap)


def onnx_export_options() -> dict:
    """Keyword arguments that make ``torch.onnx.export`` use the
    TorchScript-based exporter on every supported torch."""
    return dict(dynamo=False) if ONNX_EXPORT_HAS_DYNAMO else {}


def cpu_vector_capability() -> str:
    """The widest vector instruction set torch's CPU kernels use here
    (``'AVX512'``, ``'AVX2'``, ``'DEFAULT'``...)."""
    return torch.backends.cpu.get_cpu_capability()
