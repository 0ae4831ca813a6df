"""Shared start-up and error reporting of the ``tools/`` command lines."""
import os
import pickle
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.distributed as dist

# Exceptions that mean "the input is wrong" rather than "the code is wrong":
# the tools report them in one line instead of a traceback.
USER_ERRORS = (FileNotFoundError, ValueError, KeyError,
               pickle.UnpicklingError)


def _last_line(err: BaseException) -> str:
    """The useful line of an error, also when a data-loader worker wrapped
    it with its whole traceback."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    lines = [line for line in str(text).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    last = lines[-1]
    return last if len(lines) == 1 else last.split(': ', 1)[-1]


@contextmanager
def report_user_errors(checkpoint: Optional[str] = None) -> Iterator[None]:
    """Turn a :data:`USER_ERRORS` exception into ``error: ...`` on stderr and
    exit status 1. Set ``MMDET_CDETR_TRACEBACK=1`` to see the traceback.

    Args:
        checkpoint: The checkpoint the command loads, named when torch
            refuses to unpickle it.
    """
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get('MMDET_CDETR_TRACEBACK'):
            raise
        message = _last_line(err)
        if isinstance(err, pickle.UnpicklingError):
            message = (f'refused to load checkpoint {checkpoint or ""}: it holds '
                       'a pickled object that is not on the allow-list of '
                       'what MMEngine checkpoints contain (torch.load with '
                       f'weights_only=True): {message}')
        print(f'error: {message}', file=sys.stderr)
        sys.exit(1)


def init_cpu_distributed(launcher: str) -> None:
    """Start a gloo process group for ``--launcher pytorch`` without GPUs.

    mmengine's launcher calls ``torch.cuda.set_device`` unconditionally;
    initialising the group first lets the runner skip that on CPU-only
    machines, so ``tools/dist_train.sh CONFIG 2`` trains here too.
    """
    if launcher != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
