"""Random states in checkpoints, so that a resumed run repeats the
uninterrupted one.

MMEngine reseeds at start-up only: a run resumed from epoch ``e`` draws other
dropout masks (ours come from torch's default generator, see
``fast_dropout``), other augmentations and, with persistent data-loader
workers, workers seeded afresh instead of carrying ``e`` epochs of state.
This hook

- saves the python, numpy, torch (and current CUDA device) generators of
  every process at the end of each training epoch and restores them first
  thing in the epoch a resumed run starts with;
- makes a data-loader worker draw each sample's augmentation from a seed of
  ``(run seed, epoch, sample index)``, so workers need no state to carry
  (same augmentations with or without persistent workers, resumed or not);
- keeps validation and the train loader's worker seeding off the training
  generators, which otherwise depend on when the run (re)started.
"""
import multiprocessing
import random
from functools import partial
from typing import Callable, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import get_worker_info

from mmdet_cdetr.registry import HOOKS


def random_states() -> dict:
    """This process's generators: python, numpy, torch, current CUDA."""
    states = dict(
        python=random.getstate(),
        numpy=np.random.get_state(),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state()
    return states


def set_random_states(states: dict) -> None:
    """Restore what :func:`random_states` returned."""
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states['cuda'])


def seed_sample(seed: int, epoch: int, index: int) -> None:
    """Seed python, numpy and torch from ``(seed, epoch, index)``."""
    words = np.random.SeedSequence([seed & (2**64 - 1), epoch,
                                    index]).generate_state(4)
    np.random.seed(words)
    random.seed(int(words[0]) << 32 | int(words[1]))
    torch.manual_seed(int(words[2]) << 32 | int(words[3]))


def _seed_samples_in_worker(worker_id: int, init_fn: Optional[Callable],
                            seed: int, epoch) -> None:
    """``worker_init_fn`` that, after ``init_fn``, reseeds before every
    sample. The fetcher of a batched loader calls ``dataset.__getitems__``
    when the dataset has one: set here on this worker's copy only."""
    if init_fn is not None:
        init_fn(worker_id)
    dataset = get_worker_info().dataset

    def getitems(indices: List[int]) -> list:
        samples = []
        for index in indices:
            seed_sample(seed, epoch.value, index)
            samples.append(dataset[index])
        return samples

    dataset.__getitems__ = getitems


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save and restore every random state a training run depends on.

    Checkpoints get ``random_states``: one dict of :func:`random_states` per
    process (rank order), loadable with ``weights_only=True``. Restoring
    needs the same number of processes; otherwise the run goes on with a
    warning. Exactness is for epoch-based loops resumed from an epoch's
    checkpoint; for other loops the states are still saved and restored.
    Priority ``VERY_HIGH``: the states are taken before, and restored
    before, any other hook's epoch work.
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._gathered: Optional[tuple] = None  # (iter, states per rank)
        self._loaded: Optional[list] = None
        self._before_val: Optional[dict] = None
        self._epoch = None  # shared with the data-loader workers

    def before_train(self, runner) -> None:
        loader = runner.train_loop.dataloader
        if loader.generator is None:
            # Each new loader iterator draws a worker seed from this
            # generator; from torch's default one it would shift dropout
            # masks by whether the workers started at epoch 1 or later.
            loader.generator = torch.Generator()
        if (loader.num_workers > 0
                and isinstance(runner.train_loop, EpochBasedTrainLoop)):
            self._epoch = multiprocessing.Value('q', 0, lock=False)
            loader.worker_init_fn = partial(
                _seed_samples_in_worker,
                init_fn=loader.worker_init_fn,
                seed=runner.seed,
                epoch=self._epoch)

    def before_train_epoch(self, runner) -> None:
        if self._epoch is not None:
            self._epoch.value = runner.epoch
        states, self._loaded = self._loaded, None
        if states is None or runner.iter == 0:  # not a resumed run
            return
        if len(states) != get_world_size():
            runner.logger.warning(
                f'The checkpoint holds the random states of {len(states)} '
                f'processes, this run has {get_world_size()}: they are not '
                'restored, so the run will not repeat the original exactly.')
            return
        set_random_states(states[get_rank()])

    def after_train_epoch(self, runner) -> None:
        self._gathered = (runner.iter, all_gather_object(random_states()))

    def before_val(self, runner) -> None:
        self._before_val = random_states()

    def after_val(self, runner) -> None:
        set_random_states(self._before_val)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._gathered is not None and self._gathered[0] == runner.iter:
            checkpoint['random_states'] = self._gathered[1]
        elif get_world_size() == 1:
            checkpoint['random_states'] = [random_states()]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get('random_states')
