"""The errors we raise for inputs a user can fix.

The tools report an exception of these types (and the few third-party
errors :func:`~mmdet_cdetr.cli.report_user_errors` translates into
them) in one ``error:`` line; every other exception is a bug and keeps its
traceback. Each type also derives from the built-in error it refines, so
``except ValueError`` still catches a :class:`ConfigError`.
"""


class UserError(Exception):
    """An input (config, flag, file) is wrong; the message says which."""


class ConfigError(UserError, ValueError):
    """A config or ``--cfg-options`` value cannot be used."""


class ArgumentError(UserError, ValueError):
    """A command-line argument is out of range or inconsistent."""


class CheckpointError(UserError, ValueError):
    """A checkpoint cannot be loaded or written as asked."""


class InputNotFoundError(UserError, FileNotFoundError):
    """A file or directory the run needs does not exist."""
