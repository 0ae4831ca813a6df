"""Freed memory kept by our tools on the CPU (glibc's mallopt): fewer page
faults, applied only where chosen, never over the user's own setting."""
import platform
import subprocess
import sys

import pytest
from conftest import REPO
from mmengine.config import Config

from mmdet_cdetr.utils import apply_freed_memory_choice
from mmdet_cdetr.utils.freed_memory import (apply_config_freed_memory_choice,
                                            user_malloc_setting)

glibc_only = pytest.mark.skipif(
    platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
    reason='mallopt is glibc\'s')

# Fills and frees a fresh 64 MiB tensor again and again, as a training step
# does its activations, and prints the minor page faults of the last 4 fills
# (glibc's heap settles within the first few).
_REFILL_FAULTS = """
import resource, sys, torch
from mmdet_cdetr.utils import apply_freed_memory_choice
print(apply_freed_memory_choice({keep}, 'cpu'))
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):
    torch.empty(2**24).fill_(1.)
before = faults()
for _ in range(4):
    torch.empty(2**24).fill_(1.)
print(faults() - before)
"""


def _refill_faults(keep, env=None):
    result = subprocess.run(
        [sys.executable, '-c',
         _REFILL_FAULTS.format(keep=keep)],
        capture_output=True,
        text=True,
        env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    applied, faults = result.stdout.split()[-2:]
    return applied == 'True', int(faults)


@glibc_only
def test_kept_memory_is_reused_without_page_faults():
    applied, kept_faults = _refill_faults(None)
    assert applied
    returned_applied, returned_faults = _refill_faults(False)
    assert not returned_applied
    # 4 x 64 MiB in 4 KiB pages is 65536 faults (fewer with huge pages).
    assert kept_faults < 1000 < returned_faults


def test_off_where_not_chosen(monkeypatch):
    monkeypatch.delenv('MALLOC_MMAP_MAX_', raising=False)
    assert not apply_freed_memory_choice(False, 'cpu')
    assert not apply_freed_memory_choice(None, 'cuda')


@pytest.mark.parametrize('name, value', [
    ('MALLOC_TRIM_THRESHOLD_', '1000000'),
    ('GLIBC_TUNABLES', 'glibc.malloc.hugetlb=1'),
    ('LD_PRELOAD', '/usr/lib/libjemalloc.so.2'),
])
def test_a_users_allocator_setting_is_kept(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert user_malloc_setting() == name
    # Returns before calling mallopt: this process is left as it is.
    assert not apply_freed_memory_choice(True, 'cpu')


def test_the_training_tool_keeps_freed_memory(trained):
    assert 'malloc: freed memory is kept for reuse' in trained['log']


def test_the_config_key_turns_it_off():
    cfg = Config.fromfile(REPO /
                          'configs/conditional_detr_r50_8x2_50e_coco.py')
    assert cfg.env_cfg.keep_freed_memory is None
    cfg.merge_from_dict({'env_cfg.keep_freed_memory': False})
    assert not apply_config_freed_memory_choice(cfg)
