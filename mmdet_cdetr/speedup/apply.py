"""The one step that applies this package's CPU speed-ups to a built model.

A model built from a config holds the paper's layers and stock torch, mmcv
and mmdet modules. The speed-ups below are applied afterwards, only here,
only when asked (the configs' :class:`~mmdet_cdetr.engine.SpeedUpHook`,
``tools/image_demo.py`` and the benchmarks), each on public APIs:

* ``channels_last``: backbone and neck weights in NHWC memory format. Every
  convolution then runs on NHWC activations (oneDNN's fast layout on the
  CPU) and the neck's output is already the (bs, HW, C) token layout.
* ``fast_dropout``: each ``nn.Dropout`` replaced by
  :class:`~.fast_dropout.FastDropout` (numpy masks; training only).
* ``folded_batch_norms``: each eval-mode batch norm of the backbone and neck
  folded into the convolution before it at every call
  (:mod:`.folded_batch_norm`), in training and inference; the weights stay
  as they are.

The numbers behind each choice are in ``docs/speed.md``; what a speed-up
changes in the values is float32 rounding, never the model.
"""
import logging
from typing import List, Optional, Union

import torch
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch import nn

from mmdet_cdetr.utils.errors import ConfigError
from .fast_dropout import use_fast_dropout
from .folded_batch_norm import fold_batch_norms

#: ``enable`` values: ``'auto'`` turns the speed-ups on where they were
#: measured to pay (models on the CPU), ``True``/``False`` force them.
Enable = Union[bool, str]


def speedups_wanted(enable: Enable, device: Union[torch.device, str]) -> bool:
    """Whether ``enable`` asks for the speed-ups of a model on ``device``
    (for ``'auto'``: whether that is the CPU)."""
    if isinstance(enable, bool):
        return enable
    if enable != 'auto':
        raise ConfigError("SpeedUpHook.enable must be 'auto', True or False, "
                          f'got {enable!r}')
    return torch.device(device).type == 'cpu'


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s (or its wrapped model's) parameters."""
    param = next(iter(_unwrap(model).parameters()), None)
    return torch.device('cpu') if param is None else param.device


def apply_speedups(model: nn.Module,
                   inference: bool = False,
                   channels_last: bool = True) -> List[str]:
    """Apply the speed-ups to ``model`` (a detector, or a wrapper of one) in
    place and log one line naming them; returns their names.

    Args:
        model: The model.
        inference: Whether the model only runs inference: then its dropout
            is left as it is (it draws no masks).
        channels_last: Whether to convert backbone and neck (not for a
            model DDP already wraps for training: its gradient buckets keep
            the weights' old layout, and the optimiser would then see
            gradients in another layout than after a resume).
    """
    model = _unwrap(model)
    applied = []
    convolutional = [
        getattr(model, name) for name in ('backbone', 'neck')
        if getattr(model, name, None) is not None
    ]
    if sum(fold_batch_norms(part) for part in convolutional):
        applied.append('folded_batch_norms')
    if channels_last:
        for part in convolutional:
            part.to(memory_format=torch.channels_last)
        if convolutional:
            applied.append('channels_last')
    if not inference and use_fast_dropout(model):
        applied.append('fast_dropout')
    print_log(
        'CPU speed-ups applied: ' + (', '.join(applied) or 'none') +
        ' (SpeedUpHook; docs/speed.md)',
        logger='current',
        level=logging.INFO)
    return applied


def apply_wanted_speedups(model: nn.Module,
                          enable: Enable,
                          inference: bool = False,
                          **options: bool) -> List[str]:
    """:func:`apply_speedups` (with ``options``) where ``enable`` asks for
    them on ``model``'s device; the one decision every caller shares."""
    if not speedups_wanted(enable, model_device(model)):
        return []
    return apply_speedups(model, inference, **options)


def apply_configured_speedups(model: nn.Module,
                              custom_hooks: Optional[list],
                              inference: bool = False) -> List[str]:
    """The speed-ups the config's ``SpeedUpHook`` asks for on ``model``:
    what tools that run a model without a runner (``tools/image_demo.py``)
    call."""
    return apply_wanted_speedups(model, speedup_setting(custom_hooks),
                                 inference)


def speedup_setting(custom_hooks: Optional[list]) -> Enable:
    """The ``enable`` value of the config's ``SpeedUpHook`` (False when the
    config has none): what the inference tools follow."""
    for hook in custom_hooks or ():
        if str(hook.get('type', '')).split('.')[-1] == 'SpeedUpHook':
            return hook.get('enable', 'auto')
    return False


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model
