"""Reading a config and checking ``--cfg-options`` against it.

MMEngine adds a misspelt ``--cfg-options`` key silently (at the top level
it is then ignored; inside ``model`` a constructor fails later with a
``TypeError``), and a string given for a number fails far away with
``invalid literal for int()``. Here every key must already exist in the
config, unless written ``+key=value`` (the explicit form for adding one),
and a value must fit the type of the value it replaces. The arguments of
MMEngine's ``Runner`` (``randomness``, ``env_cfg``, ...) are known at the
top level even where the config leaves them to their defaults.
"""
import difflib
import inspect
import os.path as osp
from typing import Any, Dict

from mmengine.config import Config
from mmengine.runner import Runner

from .errors import ConfigError, InputNotFoundError

NEW_KEY_PREFIX = '+'


def read_config(path: str) -> Config:
    """``Config.fromfile(path)``, with a missing file or a directory
    reported as such."""
    if osp.isdir(path):
        raise ConfigError(f'config {path} is a directory, not a config '
                          'file (give the .py file)')
    if not osp.isfile(path):
        raise InputNotFoundError(f'config not found: {path}')
    return Config.fromfile(path)


def check_cfg_options(cfg: Config, options: Dict[str, Any]) -> dict:
    """The ``--cfg-options`` of ``options`` ready for ``merge_from_dict``:
    ``+`` prefixes removed, every other key checked to exist in ``cfg``
    with a value of a fitting type.

    Raises:
        ConfigError: Naming the key, what the config has there, and how to
            add a new key.
    """
    checked = {}
    for key, value in options.items():
        if key.startswith(NEW_KEY_PREFIX):
            checked[key[len(NEW_KEY_PREFIX):]] = value
            continue
        _check_value(key, _existing(cfg, key), value)
        checked[key] = value
    return checked


def _existing(cfg: Config, key: str) -> Any:
    """The value ``cfg`` holds at the dotted ``key`` (list items by index),
    or :class:`ConfigError` naming the first part that is not there."""
    node: Any = cfg.to_dict()
    parts = key.split('.')
    for depth, part in enumerate(parts):
        if isinstance(node, (list, tuple)) and part.isdigit():
            if int(part) < len(node):
                node = node[int(part)]
                continue
            names = [str(i) for i in range(len(node))]
        elif isinstance(node, dict) and part in node:
            node = node[part]
            continue
        elif depth == 0 and part in _runner_arguments():
            return None  # a default of the runner: it checks the value
        else:
            names = list(node) if isinstance(node, dict) else []
        where = '.'.join(parts[:depth]) or 'the top level'
        close = difflib.get_close_matches(part, names, n=1)
        hint = f'; did you mean {close[0]!r}?' if close else ''
        raise ConfigError(
            f'--cfg-options {key}: the config has no {part!r} under '
            f'{where}{hint} (to add a new key write '
            f'{NEW_KEY_PREFIX}{key}=...)')
    return node


def _check_value(key: str, old: Any, new: Any) -> None:
    """A number or a flag must stay one (other values may change type:
    ``None`` becomes a dict, a tuple a list)."""
    if isinstance(old, bool):
        if not isinstance(new, bool):
            raise ConfigError(f'--cfg-options {key}={new!r}: needs True or '
                              f'False (the config has {old!r})')
    elif isinstance(old, (int, float)):
        if isinstance(new, bool) or not isinstance(new, (int, float)):
            raise ConfigError(f'--cfg-options {key}={new!r}: needs a number '
                              f'(the config has {old!r})')


def _runner_arguments() -> set:
    return set(inspect.signature(Runner.__init__).parameters) - {'self'}
