"""Keeping freed memory in the process, for CPU training and testing.

glibc's malloc serves each block above its mmap threshold (which grows up to
32 MiB) with fresh pages from the kernel and unmaps it when it is freed, and
gives the free top of its heap back to the kernel above a trim threshold. A
CPU training step allocates its activations afresh every step, so the kernel
zeroes and maps most of them again, 4 KiB page by 4 KiB page: on this
project's CPU tens of thousands of page faults a step, 10-25% of an R50
float32 training step (``docs/performance.md``). With ``mallopt(3)``'s
``M_MMAP_MAX=0`` (large blocks from the heap too) and ``M_TRIM_THRESHOLD=-1``
(never trim) the heap keeps its pages and the next step reuses them. The
price: the process holds on to its peak heap until it exits.

This changes the whole process, so only our command-line tools apply it
(:func:`apply_freed_memory_choice`, read from the config's
``env_cfg.keep_freed_memory``, as MMEngine applies ``env_cfg``'s thread
settings); library code never does.
"""
import argparse
import ctypes
import os
import platform
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.logging import print_log

from mmdet_cdetr.ops.device_choices import keep_freed_cpu_memory

# mallopt(3) parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

# Environment variables by which a user has already chosen malloc's
# behaviour (or another allocator): theirs is kept.
_USER_MALLOC_VARIABLES = ('MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_',
                          'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TOP_PAD_')


def user_malloc_setting() -> Optional[str]:
    """The environment variable by which the user already set up the
    process's allocator (glibc's variables or tunables, or another malloc
    preloaded), or None."""
    for name in _USER_MALLOC_VARIABLES:
        if name in os.environ:
            return name
    if 'glibc.malloc.' in os.environ.get('GLIBC_TUNABLES', ''):
        return 'GLIBC_TUNABLES'
    if 'malloc' in os.environ.get('LD_PRELOAD', ''):
        return 'LD_PRELOAD'
    return None


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory (see the module docstring);
    False where the C library is not glibc."""
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # -1 disables trimming (mallopt(3)).
    return bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, -1))


def apply_freed_memory_choice(keep: Optional[bool],
                              device: Optional[str] = None) -> bool:
    """Keep freed memory if ``keep`` says so, or, where it is None, where
    :func:`~mmdet_cdetr.ops.keep_freed_cpu_memory` holds for ``device``
    (default: the device MMEngine's runner will use). An allocator the user
    set up through the environment is left alone. Returns whether it was
    applied; says so in the log."""
    if keep is None:
        keep = keep_freed_cpu_memory(torch.device(device or get_device()))
    if not keep:
        return False
    user_setting = user_malloc_setting()
    if user_setting is not None:
        print_log(
            f'malloc: left as {user_setting} sets it '
            '(env_cfg.keep_freed_memory not applied)',
            logger='current')
        return False
    kept = keep_freed_memory()
    if kept:
        print_log(
            'malloc: freed memory is kept for reuse (no mmap for large '
            'blocks, no trimming): fewer page faults, and the process keeps '
            'its peak memory; env_cfg.keep_freed_memory=False returns it to '
            'the system',
            logger='current')
    return kept


def add_freed_memory_arg(parser: argparse.ArgumentParser) -> None:
    """The benchmarks' ``--return-freed-memory``: measure glibc's default
    instead of what the tools do."""
    parser.add_argument(
        '--return-freed-memory',
        action='store_true',
        help='leave glibc\'s malloc at its defaults (freed memory returned '
        'to the system, so more page faults) instead of keeping it as '
        'tools/train.py and tools/test.py do on the CPU')


def apply_config_freed_memory_choice(cfg: Config) -> bool:
    """:func:`apply_freed_memory_choice` for ``env_cfg.keep_freed_memory``
    of ``cfg`` (absent or None: decided by the device)."""
    return apply_freed_memory_choice(
        cfg.get('env_cfg', {}).get('keep_freed_memory'))
