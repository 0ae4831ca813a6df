import io
import pickle
import random

import numpy as np
import pytest
import torch
from conftest import needs_safe_loading
from mmengine.logging import HistoryBuffer, MessageHub

from mmdet_cdetr.engine.hooks.random_state_hook import (random_states,
                                                        set_random_states)
from mmdet_cdetr.utils.checkpoint_safety import history_buffer_method
from mmdet_cdetr.utils.torch_compat import load_weights_only


def _roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return load_weights_only(buffer)


def test_message_hub_state_loads_with_weights_only():
    hub = MessageHub.get_instance('test_checkpoint_safety')
    hub.update_scalar('train/loss', np.float64(0.5))
    hub.update_scalar('train/lr', 1e-4)
    hub.update_info('epoch', 3)
    state = _roundtrip(dict(message_hub=hub.state_dict()))
    loss = state['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer)
    assert loss.current() == pytest.approx(0.5)
    assert loss.mean() == pytest.approx(0.5)


class _GetattrOf:
    """Pickles as ``getattr(obj, name)``."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return (getattr, (self.obj, self.name))


@needs_safe_loading
def test_getattr_resolves_only_history_buffer_statistics():
    assert _roundtrip(_GetattrOf(HistoryBuffer, 'mean')) is \
        HistoryBuffer.mean
    for obj, name in ((HistoryBuffer, 'register_statistics'),
                      (torch.nn.Module, 'apply'), (np.ndarray, 'tofile')):
        with pytest.raises(pickle.UnpicklingError):
            _roundtrip(_GetattrOf(obj, name))
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        history_buffer_method(HistoryBuffer, '__init__')


@needs_safe_loading
def test_other_callables_are_still_refused():

    class Evil:

        def __reduce__(self):
            return (eval, ('1 + 1', ))

    with pytest.raises(pickle.UnpicklingError, match='eval'):
        _roundtrip(Evil())


def test_random_states_load_with_weights_only():
    """What RandomStateHook adds to checkpoints needs no new allow-list
    entry, and restores the generators exactly."""

    def draws():
        return random.random(), np.random.rand(), torch.rand(3)

    saved = random_states()
    expected = draws()
    set_random_states(
        _roundtrip(dict(random_states=[saved]))['random_states'][0])
    again = draws()
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])
