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
from typing import Any, Dict, List

from mmengine.config import Config
from mmengine.runner import Runner

from mmdet_cdetr.utils.errors import ConfigError, InputNotFoundError

NEW_KEY_PREFIX = '+'


def read_config(path: str) -> Config:
    """``Config.fromfile(path)``, with a missing file or a directory
    reported as such."""
    if osp.isdir(path):
        raise ConfigError(f'config {path} is a directory, not a config '
                          'file (give the .py file)')
    if not osp.isfile(path):
        raise InputNotFoundError(f'config not found: {path}')
    try:
        return Config.fromfile(path)
    except FileNotFoundError as err:
        reading = _configs_being_read(err)
        if len(reading) < 2 or osp.isfile(reading[-1]):
            raise
        raise InputNotFoundError(
            f'config {reading[-2]} names a base config that does not exist: '
            f'{reading[-1]} (check its _base_)') from err
    except NameError as err:
        raise ConfigError(_undefined_name(err, path)) from err


def _configs_being_read(err: BaseException) -> List[str]:
    """The config files MMEngine was reading when ``err`` was raised, the
    outermost first (a config, its base, the base's base, ...)."""
    files, tb = [], err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == '_file2dict':
            filename = tb.tb_frame.f_locals.get('filename')
            if filename:
                files.append(osp.normpath(filename))
        tb = tb.tb_next
    return files


def _undefined_name(err: NameError, path: str) -> str:
    """Where in which config a name is used that it does not define. A
    config's own variables are visible to it; those of its ``_base_`` only
    through ``{{_base_.NAME}}``."""
    where, tb = path, err.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith('.py') and tb.tb_frame.f_code.co_name in (
                '<module>', '<lambda>'):
            where = f'{osp.normpath(filename)}, line {tb.tb_lineno}'
        tb = tb.tb_next
    name = getattr(err, 'name', None) or str(err)
    return (f'config {where}: name {name!r} is not defined (a variable of '
            f'a _base_ config is not visible by its name: define it again, '
            f'or write {{{{_base_.{name}}}}})')


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


# Optimizer arguments torch refuses below 0 ("Invalid learning rate"),
# and the multipliers of paramwise_cfg that would make them negative.
_NON_NEGATIVE = ('lr', 'weight_decay', 'eps', 'momentum')
_NON_NEGATIVE_MULTS = ('lr_mult', 'decay_mult')


def check_training_values(cfg: Config) -> None:
    """Raise :class:`ConfigError` naming the key for a schedule or optimizer
    value that torch or MMEngine would refuse deep inside the runner
    ("end should be larger than begin", "Invalid learning rate") or that
    trains nothing: the loop length, the optimizer's arguments, the
    ``paramwise_cfg`` multipliers and each ``param_scheduler``'s range."""
    train_cfg = cfg.get('train_cfg') or {}
    for key in ('max_epochs', 'max_iters', 'val_interval'):
        if key in train_cfg:
            _require(f'train_cfg.{key}', train_cfg[key], whole=True)
    optim_wrapper = cfg.get('optim_wrapper') or {}
    optimizer = optim_wrapper.get('optimizer') or {}
    for key in _NON_NEGATIVE:
        if key in optimizer:
            _require(f'optim_wrapper.optimizer.{key}', optimizer[key])
    for index, beta in enumerate(optimizer.get('betas') or ()):
        if not isinstance(beta, (int, float)) or not 0 <= beta < 1:
            raise ConfigError(
                f'optim_wrapper.optimizer.betas[{index}]={beta!r}: must lie '
                'in [0, 1)')
    custom_keys = (optim_wrapper.get('paramwise_cfg')
                   or {}).get('custom_keys') or {}
    for name, multipliers in custom_keys.items():
        for key in _NON_NEGATIVE_MULTS:
            if key in (multipliers or {}):
                _require(
                    f'optim_wrapper.paramwise_cfg.custom_keys.{name}.{key}',
                    multipliers[key])
    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    for index, scheduler in enumerate(schedulers):
        begin, end = scheduler.get('begin', 0), scheduler.get('end')
        if isinstance(begin, (int, float)) and isinstance(
                end, (int, float)) and end <= begin:
            raise ConfigError(
                f'param_scheduler[{index}] ({scheduler.get("type")}): '
                f'end={end} must be larger than begin={begin}')


def _require(key: str, value: Any, whole: bool = False) -> None:
    """``value`` must be a number >= 0 (a whole number >= 1 if ``whole``)."""
    if whole:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f'{key}={value!r}: must be a whole number >= 1')
    else:
        number = isinstance(value,
                            (int, float)) and not isinstance(value, bool)
        if not number or not value >= 0:
            raise ConfigError(f'{key}={value!r}: must be a number >= 0')
