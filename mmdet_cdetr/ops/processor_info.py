"""What the CPU is, read from the operating system: which vendor's BLAS
dispatch it gets (:func:`~.device_choices.onednn_linear`), whether
PyTorch's bf16 kernels have its matrix tiles
(:func:`~.device_choices.materialise_reduced_precision_attention`) and how
the benchmarks describe it."""
import functools
import platform
from typing import Dict, Tuple


def cpuinfo_fields(keys: Tuple[str, ...],
                   path: str = '/proc/cpuinfo') -> Dict[str, str]:
    """The first value of each of ``keys`` in Linux's ``/proc/cpuinfo``
    (empty elsewhere)."""
    fields: Dict[str, str] = {}
    try:
        with open(path) as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(':')
                key = key.strip()
                if key in keys and key not in fields:
                    fields[key] = value.strip()
    except OSError:
        pass
    return fields


@functools.lru_cache(maxsize=None)
def is_intel_cpu() -> bool:
    """Whether the CPU says it is Intel's (``vendor_id`` on Linux; Windows
    names the vendor in ``platform.processor()``)."""
    vendor = cpuinfo_fields(('vendor_id', )).get('vendor_id')
    return 'GenuineIntel' in (vendor or platform.processor())


@functools.lru_cache(maxsize=None)
def cpu_has_amx_bf16() -> bool:
    """Whether the CPU has AMX's bf16 tile products (Intel since Sapphire
    Rapids), which oneDNN's and PyTorch's bf16 CPU kernels use; Linux's
    ``flags`` (false elsewhere)."""
    return 'amx_bf16' in cpuinfo_fields(('flags', )).get('flags', '').split()
