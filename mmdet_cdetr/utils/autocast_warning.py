import logging
from typing import Union

import torch
from mmengine.logging import print_log

from mmdet_cdetr.ops.device_choices import fast_autocast


def warn_if_autocast_is_slow(device: Union[torch.device, str]) -> bool:
    """Warn when ``--amp`` on ``device`` will run slower than float32 (a
    CPU that emulates bf16); returns whether it warned.

    Autocast is the user's request, so it still runs: the numbers are those
    of bf16 either way, only the time differs."""
    if fast_autocast(device):
        return False
    print_log(
        f'--amp on this CPU ({torch.backends.cpu.get_cpu_capability()}) '
        'runs bf16 emulated: oneDNN reports no bf16 support (it needs '
        'AVX-512 or AMX), so mixed precision will be several times slower '
        'than float32 here; drop --amp for speed (docs/performance.md)',
        logger='current',
        level=logging.WARNING)
    return True
