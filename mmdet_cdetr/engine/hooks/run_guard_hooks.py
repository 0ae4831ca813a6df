"""Faults during a training run, each named in one line.

``tools/train.py`` adds these hooks to every config (:func:`add_run_guards`):

- :class:`FiniteLossHook`: a loss that is not finite (a learning rate far
  too high, fp16 overflow). Without a loss scaler the run stops at once,
  naming the iteration, the loss terms and the last good checkpoint, which
  stays as it is (nothing is saved after the divergence). Under a loss
  scaler (``--amp`` on a GPU) the scaler skips such steps; repeated skips
  are reported. The matcher makes non-finite costs finite for this
  (:class:`~mmdet_cdetr.models.task_modules.HungarianAssigner`).
- :class:`ScheduleEndHook`: ``--resume`` of a run whose checkpoint is at or
  past the end of the schedule, which would train nothing in silence.
- :class:`WorkDirGuardHook`: a work dir removed while the run writes into
  it is re-created (logs and checkpoints continue there) and named.
"""
import logging
import math
import os
import os.path as osp
from typing import Any, Dict, List, Optional

import torch
from mmengine.config import Config, ConfigDict
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import MMLogger, print_log
from mmengine.runner import IterBasedTrainLoop, Runner

from mmdet_cdetr.registry import HOOKS
from mmdet_cdetr.utils.checkpoint_file import checkpoint_to_load
from mmdet_cdetr.utils.errors import ConfigError, UserError


class DivergenceError(UserError, RuntimeError):
    """Training produced a loss that is not finite."""


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``<work_dir>/last_checkpoint`` names, or None."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        return f.read().strip() or None


def _finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    return not isinstance(value, float) or math.isfinite(value)


def non_finite_terms(outputs: Optional[Dict]) -> List[str]:
    """The loss terms of a training step's log variables that are not
    finite numbers (the total ``loss`` last). The total is looked at
    first: it is finite only if every term is (one device sync a step)."""
    outputs = outputs or {}
    if 'loss' in outputs and _finite(outputs['loss']):
        return []
    bad = [
        name for name, value in outputs.items()
        if 'loss' in name and not _finite(value)
    ]
    return sorted(bad, key=lambda name: name == 'loss')


def _loss_scaler(runner: Runner):
    return getattr(runner.optim_wrapper, 'loss_scaler', None)


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop a run whose loss is not finite (without a loss scaler), or
    report the steps a loss scaler skips when they repeat.

    Args:
        report_after: Skipped steps in a row reported first; then every
            tenfold.
    """
    priority = 'VERY_HIGH'  # before the checkpoint and logger hooks

    def __init__(self, report_after: int = 3) -> None:
        self.report_after = report_after
        self.skipped = 0
        self.in_a_row = 0
        self._scale: Optional[float] = None

    def before_train_iter(self,
                          runner: Runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        scaler = _loss_scaler(runner)
        self._scale = scaler.get_scale() if scaler is not None else None

    def after_train_iter(self,
                         runner: Runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[Dict] = None) -> None:
        bad = non_finite_terms(outputs)
        scaler = _loss_scaler(runner)
        if scaler is None:
            if bad:
                raise DivergenceError(self._diverged(runner, bad))
            return
        skipped = self._scale is not None and scaler.get_scale() < self._scale
        if not skipped:
            self.in_a_row = 0
            return
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.report_after and math.log10(
                self.in_a_row / self.report_after).is_integer():
            terms = f'non-finite {", ".join(bad)}' if bad else (
                'gradients not finite')
            print_log(
                f'iteration {runner.iter + 1}: {self.in_a_row} steps in a '
                f'row skipped by the loss scaler ({terms}; scale now '
                f'{scaler.get_scale():g}, {self.skipped} skipped in all); '
                'if this goes on, lower the learning rate or train in '
                'float32',
                logger='current',
                level=logging.WARNING)

    def after_train(self, runner: Runner) -> None:
        if self.skipped:
            print_log(
                f'the loss scaler skipped {self.skipped} of {runner.iter} '
                'training steps (loss or gradients not finite in fp16)',
                logger='current',
                level=logging.WARNING)

    @staticmethod
    def _diverged(runner: Runner, bad: List[str]) -> str:
        last = last_checkpoint(runner.work_dir)
        kept = (f'the last good checkpoint is {last} (kept; nothing was '
                'saved after the divergence)'
                if last else 'no checkpoint was saved before it')
        return (f'training diverged at iteration {runner.iter + 1} (epoch '
                f'{runner.epoch + 1}): loss not finite in {", ".join(bad)}; '
                f'{kept}. Lower the learning rate (optim_wrapper.optimizer.'
                'lr), clip gradients harder (optim_wrapper.clip_grad) or '
                'check the data, then train again')


@HOOKS.register_module()
class ScheduleEndHook(Hook):
    """``--resume`` from a checkpoint at the end of the schedule says the
    run has finished (and exits 0: there is nothing left to do); one past
    the end of this config's schedule is a :class:`ConfigError`, since the
    config cannot be the one the run was trained with."""
    priority = 'VERY_HIGH'

    def before_train(self, runner: Runner) -> None:
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):
            done, end = loop.iter, loop.max_iters
            unit, key = 'iteration', 'train_cfg.max_iters'
        elif hasattr(loop, 'max_epochs'):
            done, end = loop.epoch, loop.max_epochs
            unit, key = 'epoch', 'train_cfg.max_epochs'
        else:
            return
        if done < end or done == 0:
            return
        checkpoint = checkpoint_to_load(
            ConfigDict(
                resume=True,
                load_from=runner._load_from,
                work_dir=runner.work_dir)) or 'the checkpoint'
        if done > end:
            raise ConfigError(
                f'--resume: {checkpoint} is at {unit} {done}, past the end '
                f'of this schedule ({key}={end}): nothing would be trained. '
                f'Set {key} above {done} to train on, or resume with the '
                'config the run was trained with')
        print_log(
            f'--resume: the run has finished ({checkpoint} is at {unit} '
            f'{done} of {key}={end}): nothing left to train; set {key} '
            f'above {done} to train longer',
            logger='current',
            level=logging.WARNING)


@HOOKS.register_module()
class WorkDirGuardHook(Hook):
    """Re-create the work dir (and the log dir in it) when it was removed
    while the run trains, before the next log line or checkpoint is
    written there, and say so once per removal. Training goes on: the
    model in memory is intact, and the next checkpoint is saved as
    planned; what the directory held is gone either way."""
    priority = 'VERY_HIGH'

    def after_train_iter(self, runner: Runner, *args, **kwargs) -> None:
        self._ensure(runner)

    def after_train_epoch(self, runner: Runner) -> None:
        self._ensure(runner)

    def after_val_epoch(self, runner: Runner, metrics=None) -> None:
        self._ensure(runner)

    @staticmethod
    def _ensure(runner: Runner) -> None:
        if not is_main_process() or osp.isdir(runner.log_dir):
            return
        folders = [runner.work_dir, runner.log_dir]
        for backend in getattr(runner.visualizer, '_vis_backends',
                               {}).values():
            save_dir = getattr(backend, '_save_dir', None)
            if save_dir:
                folders.append(save_dir)
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
        for handler in MMLogger.get_current_instance().handlers:
            if isinstance(handler, logging.FileHandler) and not osp.exists(
                    handler.baseFilename):
                old = handler.setStream(
                    open(handler.baseFilename, 'a', encoding='utf-8'))
                if old is not None:
                    old.close()
        print_log(
            f'work dir {runner.work_dir} was removed while training ran: '
            f're-created it at iteration {runner.iter + 1} (what it held is '
            'lost; the log and the next checkpoints are written there '
            'again)',
            logger='current',
            level=logging.WARNING)


RUN_GUARDS = ('FiniteLossHook', 'ScheduleEndHook', 'WorkDirGuardHook')


def add_run_guards(cfg: Config) -> None:
    """Add the hooks of this module to ``cfg.custom_hooks`` (those the
    config does not list already)."""
    hooks = list(cfg.get('custom_hooks') or [])
    listed = {str(hook.get('type', '')).split('.')[-1] for hook in hooks}
    hooks += [
        dict(type=f'mmdet_cdetr.{name}') for name in RUN_GUARDS
        if name not in listed
    ]
    cfg.custom_hooks = hooks
