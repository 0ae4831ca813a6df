"""Multi-process runs of the tools (``--launcher``): the environment each
launcher must have set, a CPU-only start, and the end of the process group.
"""
import gc
import os

import torch
import torch.distributed as dist
from mmengine.config import Config

from mmdet_cdetr.utils.errors import ArgumentError


def prepare_cpu_distributed(cfg: Config) -> None:
    """Let ``--launcher pytorch`` run on a machine without GPUs.

    mmengine's launcher calls ``torch.cuda.set_device`` and wraps the model
    in DDP with ``device_ids=[LOCAL_RANK]``; both fail on the CPU. Starting
    a gloo process group first (the runner then skips its own) and wrapping
    without device ids makes ``tools/dist_train.sh CONFIG 2`` train here.
    On GPUs nothing changes.
    """
    if cfg.launcher != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))


# What each launcher of ``--launcher`` needs in the environment, and the
# script of ours that provides it ({tool} is train or test).
_LAUNCHER_ENVIRONMENT = dict(
    pytorch=(('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
             'tools/dist_{tool}.sh (it runs torchrun)'),
    slurm=(('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
           'tools/slurm_{tool}.sh'),
    mpi=(('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE'), 'mpirun'))


def check_launcher_environment(launcher: str, tool: str = 'train') -> None:
    """Raise :class:`~mmdet_cdetr.utils.errors.ArgumentError` when
    ``--launcher`` is given without the environment its launcher sets
    (torch would fail with "environment variable RANK expected")."""
    needed, how = _LAUNCHER_ENVIRONMENT.get(launcher, ((), ''))
    missing = [name for name in needed if name not in os.environ]
    if missing:
        raise ArgumentError(
            f'--launcher {launcher} needs the environment its launcher sets '
            f'({", ".join(missing)} not set): start it with '
            f'{how.format(tool=tool)}, or leave --launcher out for one '
            'process')


def finish_distributed() -> None:
    """End a finished multi-process run on every process: wait for its
    last collectives, then destroy the process group, which joins gloo's
    worker threads. Otherwise a gloo thread may still be releasing the
    tensors of the run's last collective while Python shuts down, and the
    process aborts after its work is done ("terminate called without an
    active exception"). The runner must be gone: DDP holds the group."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    gc.collect()  # the runner's reference cycles, DDP's hold on the group
    dist.destroy_process_group()
