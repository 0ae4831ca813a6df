"""The torch-version answers of :mod:`mmdet_cdetr.utils.torch_compat` match
what the installed torch has, and weights-only loading of our checkpoints
works on every supported torch (restricted where torch can restrict it)."""
import inspect
import io
import logging

import numpy as np
import torch
from mmengine.logging import MessageHub

from mmdet_cdetr.utils import torch_compat


def test_version_answers_match_the_installed_torch():
    export_args = inspect.signature(torch.onnx.export).parameters
    assert torch_compat.ONNX_EXPORT_HAS_DYNAMO == ('dynamo' in export_args)
    assert torch_compat.onnx_export_options() == (
        dict(dynamo=False) if 'dynamo' in export_args else {})
    if torch_compat.SAFE_WEIGHTS_ONLY_LOAD:
        assert hasattr(torch.serialization, 'safe_globals')
        assert hasattr(torch.serialization, 'add_safe_globals')
    assert torch_compat.cpu_vector_capability() in ('DEFAULT', 'NO AVX', 'AVX',
                                                    'AVX2', 'AVX512',
                                                    'ZVECTOR', 'VSX')


def _mmengine_checkpoint() -> io.BytesIO:
    hub = MessageHub.get_instance('test_torch_compat')
    hub.update_scalar('train/loss', np.float64(0.25))
    buffer = io.BytesIO()
    torch.save(
        dict(state_dict=dict(w=torch.ones(2)), message_hub=hub.state_dict()),
        buffer)
    buffer.seek(0)
    return buffer


def test_mmengine_checkpoints_load_on_every_supported_torch(monkeypatch):
    logged = []
    monkeypatch.setattr(torch_compat, 'print_log',
                        lambda msg, **kwargs: logged.append((msg, kwargs)))
    monkeypatch.setattr(torch_compat, '_warned_full_unpickling', False)
    for _ in range(2):
        checkpoint = torch_compat.load_weights_only(_mmengine_checkpoint())
        assert torch.equal(checkpoint['state_dict']['w'], torch.ones(2))
        loss = checkpoint['message_hub']['log_scalars']['train/loss']
        assert loss.current() == 0.25
    if torch_compat.SAFE_WEIGHTS_ONLY_LOAD:
        assert not logged
    else:  # said once, as a warning
        assert len(logged) == 1
        message, kwargs = logged[0]
        assert 'unpickled in full' in message
        assert kwargs['level'] == logging.WARNING


def test_add_safe_globals_says_whether_torch_holds_them():

    class Marker:
        pass

    held = torch_compat.add_safe_globals([Marker])
    assert held == torch_compat.SAFE_WEIGHTS_ONLY_LOAD
    if held:
        assert Marker in torch.serialization.get_safe_globals()
