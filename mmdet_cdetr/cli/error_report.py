"""The tools' errors as one ``error: ...`` line on stderr.

Ours (:mod:`mmdet_cdetr.utils.errors`) and the user errors of other
libraries that we recognise are reported so; any other exception is a bug
and keeps its traceback.
"""
import os
import pickle
import re
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator, List, Optional, Set

from mmdet_cdetr.utils.checkpoint_safety import refused_checkpoint
from mmdet_cdetr.utils.errors import UserError


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
