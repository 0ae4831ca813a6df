"""Shared start-up and error reporting of the ``tools/`` command lines."""
import argparse
import gc
import os
import os.path as osp
import pickle
import re
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator, List, Optional, Set

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .checkpoint_file import check_checkpoint_file, checkpoint_to_load
from .checkpoint_safety import refused_checkpoint
from .config_options import check_cfg_options, read_config
from .errors import ArgumentError, UserError
from .work_dir_lock import ensure_writable


def _summary(err: BaseException) -> str:
    """The useful line of an error, also when a data-loader worker wrapped
    it with its whole traceback."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    last = lines[-1]
    return last if len(lines) == 1 else last.split(': ', 1)[-1]


def _syntax_error(err: SyntaxError) -> str:
    """Where the config's syntax error is. MMEngine re-raises it as
    "... config file PATH: MESSAGE (<unknown>, line N)"."""
    if err.filename and err.filename != '<unknown>':
        return (f'syntax error in config {err.filename}, line {err.lineno}: '
                f'{err.msg}')
    found = re.search(r'config file (.+?): (.+) \(<unknown>, line (\d+)\)',
                      str(err))
    if found is None:
        return f'syntax error: {err}'
    path, message, line = found.groups()
    return f'syntax error in config {path}, line {line}: {message}'


def _registry_miss(err: KeyError) -> bool:
    """Whether ``err`` is MMEngine's "X is not in the ... registry" (a
    misspelt ``type`` in the config)."""
    return bool(re.search(r'is not in the \S+ registry', str(err)))


def _option_error(err: TypeError, cfg_options: Iterable) -> str:
    """The ``--cfg-options`` key behind an "unexpected keyword argument"
    error, or '' when the argument did not come from one."""
    found = re.search(r"unexpected keyword argument '(\w+)'", str(err))
    for key in cfg_options:
        if found and key.split('.')[-1] == found.group(1):
            return (f'--cfg-options {key}: not an argument of that '
                    f'component: {_summary(err)}')
    return ''


@contextmanager
def report_user_errors(
    checkpoint: Optional[str] = None,
    cfg_options: Iterable = ()
) -> Iterator[None]:
    """Turn a :class:`~mmdet_cdetr.utils.errors.UserError` into
    ``error: ...`` on stderr and exit status 1 (130 for Ctrl-C), and the
    user errors of other libraries we recognise: a config's syntax error, a
    type missing from a registry, a refused pickle, an unexpected keyword
    argument from a ``--cfg-options`` key, and those of
    :data:`OUTSIDE_ERRORS` (a file missing while a config is read, the
    optimizer's and the schedulers' argument checks). Any other exception
    is a bug and keeps its traceback. Set ``MMDET_CDETR_TRACEBACK=1`` to
    see the traceback of a user error too.

    Args:
        checkpoint: The checkpoint the command loads, named when torch
            refuses to unpickle it.
        cfg_options: The keys given to ``--cfg-options``.
    """
    try:
        yield
    except KeyboardInterrupt:
        print('error: interrupted', file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        message = _user_message(err, checkpoint, cfg_options)
        if not message or os.environ.get('MMDET_CDETR_TRACEBACK'):
            raise
        print(f'error: {message}', file=sys.stderr)
        sys.exit(1)


# Errors of other libraries that we know how to name: the type, the module
# it comes from (a path fragment), whether that module must have raised it
# (False: it may be anywhere on the stack) and what the error is about.
# Each exception of the chain counts: registry builds re-raise an argument
# error as a new exception of the same type.
OUTSIDE_ERRORS = (
    (FileNotFoundError, 'mmengine/config/', False, 'config'),
    (ValueError, 'torch/optim/', True,
     'optimizer argument (optim_wrapper.optimizer)'),
    (ValueError, 'mmengine/optim/scheduler/', True,
     'learning-rate or momentum schedule (param_scheduler)'),
)


def _frames(err: BaseException) -> List[str]:
    """The files of ``err``'s traceback, outermost first."""
    files, tb = [], err.__traceback__
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename.replace(os.sep, '/'))
        tb = tb.tb_next
    return files


def _comes_from(err: BaseException, fragment: str, raiser: bool) -> bool:
    """Whether ``err`` or an exception it was raised from (or while
    handling) comes from code whose path holds ``fragment``."""
    seen: Set[int] = set()
    current: Optional[BaseException] = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        files = _frames(current)
        if raiser and files and fragment in files[-1]:
            return True
        if not raiser and any(fragment in file for file in files):
            return True
        current = current.__cause__ or current.__context__
    return False


def _outside_error(err: Exception) -> str:
    """The one-line report of an error of another library that
    :data:`OUTSIDE_ERRORS` names, or ''."""
    for kind, fragment, raiser, what in OUTSIDE_ERRORS:
        if isinstance(err, kind) and _comes_from(err, fragment, raiser):
            return f'{what}: {_summary(err)}'
    return ''


def _user_message(err: Exception, checkpoint: Optional[str],
                  cfg_options: Iterable) -> str:
    """The one-line report of a user error, '' for any other exception."""
    if isinstance(err, UserError):
        return _summary(err)
    outside = _outside_error(err)
    if outside:
        return outside
    if isinstance(err, SyntaxError):
        return _syntax_error(err)
    if isinstance(err, TypeError):
        return _option_error(err, cfg_options)
    if isinstance(err, KeyError) and _registry_miss(err):
        return _summary(err)
    if isinstance(err, pickle.UnpicklingError):
        return str(refused_checkpoint(checkpoint, err))
    return ''


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


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """The flags mmdet's train.py and test.py share."""
    parser.add_argument('--work-dir', help='the dir to save logs and results')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def _config_being_read(err: SyntaxError, default: str) -> str:
    """The file (the config or one of its bases) mmengine was reading when
    it parsed text without a file name and raised ``err``."""
    filename, frame = default, err.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_name == '_file2dict':
            filename = frame.tb_frame.f_locals.get('filename', filename)
        frame = frame.tb_next
    return osp.normpath(filename)


def load_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with the shared flags applied."""
    try:
        cfg = read_config(args.config)
    except SyntaxError as err:
        if err.filename in (None, '<unknown>') and err.lineno:
            err.filename = _config_being_read(err, args.config)
        raise
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(check_cfg_options(cfg, args.cfg_options))
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


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


def build_runner(cfg: Config) -> Runner:
    """MMEngine's runner for ``cfg`` (also on CPU-only distributed runs),
    after checking its work dir and the checkpoint it will load."""
    ensure_writable(cfg.work_dir)
    checkpoint = checkpoint_to_load(cfg)
    if checkpoint and '://' not in checkpoint:
        check_checkpoint_file(checkpoint)
    prepare_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
