import logging
from typing import Union

import torch
from mmengine.logging import print_log

from .torch_compat import cpu_vector_capability


def warn_if_autocast_is_slow(device: Union[torch.device, str]) -> bool:
    """Warn when ``--amp`` on ``device`` will run slower than float32 (a
    CPU whose vector units stop short of AVX-512, where bf16 is emulated:
    convolutions and matrix products measured 7-10x slower than float32 on
    one); returns whether it warned.

    Autocast is the user's request, so it still runs: the numbers are those
    of bf16 either way, only the time differs."""
    if torch.device(device).type != 'cpu':
        return False
    capability = cpu_vector_capability()
    if capability.startswith('AVX512'):
        return False
    print_log(
        f'--amp on this CPU ({capability}) runs bf16 emulated: it needs '
        'AVX-512 or AMX, so mixed precision will be several times slower '
        'than float32 here; drop --amp for speed (docs/speed.md)',
        logger='current',
        level=logging.WARNING)
    return True
