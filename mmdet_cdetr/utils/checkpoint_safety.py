"""Allow-list of what MMEngine writes into its checkpoints.

Since torch 2.6 ``torch.load`` unpickles only allow-listed globals
(``weights_only=True``). MMEngine's checkpoints also hold its message hub
(``HistoryBuffer`` objects with numpy arrays and scalars), so resuming and
testing fail. Registering exactly those globals keeps the safety on: a
checkpoint carrying any other pickled callable is still refused.
"""
import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_globals() -> list:
    """numpy objects that pickled arrays, scalars and dtypes refer to."""
    core = getattr(np, '_core', None) or np.core
    found = [
        np.ndarray, np.dtype, core.multiarray._reconstruct,
        core.multiarray.scalar
    ]
    found += [type(np.dtype(code)) for code in np.typecodes['All']]
    return found


def allow_mmengine_checkpoints() -> None:
    """Add MMEngine's checkpoint contents to torch's safe globals."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:  # torch < 2.4 loads without a list
        add_safe_globals([HistoryBuffer] + _numpy_globals())
