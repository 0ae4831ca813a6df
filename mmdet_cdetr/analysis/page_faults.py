"""Page faults: time a step spends getting fresh memory from the kernel,
which no operator profile shows (it is charged to whichever operator first
writes the memory).

glibc hands allocations above its mmap threshold (at most 32 MiB) straight
to the kernel and returns them on free, so every float32 activation that
large is faulted in again, 4 KiB at a time, on every step; bf16 halves the
tensors and can fall below the threshold. On one of this project's CPUs a
minor fault cost 1.3-3.6 us and a float32 R50 training step took 42,000
to 147,000 of them (``docs/performance.md``).
"""
import statistics
import time
from typing import Optional

import torch

try:
    import resource
except ImportError:  # Windows: no getrusage
    resource = None

_PROBE_BYTES = 64 * 2**20


def minor_page_faults() -> Optional[int]:
    """Minor page faults of this process so far (None where the platform
    does not count them)."""
    if resource is None:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def page_fault_seconds(repeats: int = 5) -> Optional[float]:
    """Seconds one minor page fault costs here: filling a freshly allocated
    64 MiB buffer, minus filling it again, per fault the first fill took;
    the median of ``repeats``. None where faults are not counted, or where
    the allocator kept the memory and the first fill faulted nothing."""
    if minor_page_faults() is None:
        return None
    costs = []
    for _ in range(repeats):
        before, start = minor_page_faults(), time.perf_counter()
        buffer = torch.empty(_PROBE_BYTES // 4).fill_(1.)
        fresh = time.perf_counter() - start
        faults = minor_page_faults() - before
        start = time.perf_counter()
        buffer.fill_(2.)
        refill = time.perf_counter() - start
        del buffer
        if faults:
            costs.append(max(fresh - refill, 0.) / faults)
    return statistics.median(costs) if costs else None
