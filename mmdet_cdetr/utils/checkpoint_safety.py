"""Allow-list of what MMEngine writes into its checkpoints.

Since torch 2.6 ``torch.load`` unpickles only allow-listed globals
(``weights_only=True``). MMEngine's checkpoints also hold its message hub:
``HistoryBuffer`` objects with numpy arrays and scalars, and their
statistics methods, pickled as ``getattr(HistoryBuffer, 'min')``. Resuming
and testing then fail. Registering exactly those globals keeps the safety
on: any other pickled callable is still refused, and ``getattr`` only
resolves HistoryBuffer's statistics methods, never an arbitrary attribute.
Torch before 2.6 cannot hold such a list (:mod:`.torch_compat`).
"""
import pickle
from typing import Any, Optional

import numpy as np
from mmengine.logging import HistoryBuffer

from .errors import CheckpointError
from .torch_compat import SAFE_WEIGHTS_ONLY_LOAD, add_safe_globals


def history_buffer_method(obj: Any, name: str) -> Any:
    """``getattr`` as the unpickler may call it: HistoryBuffer's registered
    statistics methods (min, max, mean, current, ...) and nothing else."""
    if obj is HistoryBuffer and name in HistoryBuffer._statistics_methods:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not among what MMEngine writes into '
        'checkpoints (only HistoryBuffer statistics methods are allowed)')


def _numpy_globals() -> list:
    """numpy objects that pickled arrays, scalars and dtypes refer to."""
    # numpy 2 renamed its core package (numpy 1.26 has a stub of the name).
    numpy_2 = np.lib.NumpyVersion(np.__version__) >= '2.0.0'
    core = np._core if numpy_2 else np.core
    found = [
        np.ndarray, np.dtype, core.multiarray._reconstruct,
        core.multiarray.scalar
    ]
    found += [type(np.dtype(code)) for code in np.typecodes['All']]
    return found


def allow_mmengine_checkpoints() -> bool:
    """Add MMEngine's checkpoint contents to torch's safe globals; returns
    whether this torch can hold them."""
    if not SAFE_WEIGHTS_ONLY_LOAD:
        return False
    # Instantiating one buffer registers the built-in statistics methods.
    HistoryBuffer()
    return add_safe_globals([HistoryBuffer] + _numpy_globals() + [
        (history_buffer_method, '__builtin__.getattr'),
        (history_buffer_method, 'builtins.getattr'),
    ])


def refused_checkpoint(path: Optional[str],
                       err: pickle.UnpicklingError) -> CheckpointError:
    """The error to raise when torch refuses to unpickle ``path``: it
    names the file and what it holds off the allow-list."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    marker = 'WeightsUnpickler error: '
    detail = next(
        (line.split(marker, 1)[1] for line in lines if marker in line),
        lines[-1] if lines else type(err).__name__)
    return CheckpointError(
        f'refused to load checkpoint {path or ""}: it holds a pickled '
        'object that is not on the allow-list of what MMEngine checkpoints '
        f'contain (torch.load with weights_only=True): {detail}')
