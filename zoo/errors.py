"""The project's own error types: mistakes a user can fix, each with a one-line message.

Command lines catch exactly ``USER_ERRORS`` and print ``error: <message>`` with exit status
2; anything else is a bug in the zoo and keeps its traceback.
"""

from __future__ import annotations


class ZooError(Exception):
    """A mistake the user can fix; the message names the file, flag or value and what to do."""


class InvalidArgumentError(ZooError, ValueError):
    """An argument or flag is out of its range or of the wrong type."""


class ConfigError(ZooError, ValueError):
    """A configuration file (zoo.json, config.json, a run's config) is malformed."""


class UnknownNameError(ZooError, KeyError):
    """A model, head or family name is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# OSErrors a user causes with a path (missing, a folder where a file belongs, permissions).
PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError)
USER_ERRORS = (ZooError, *PATH_ERRORS)


def one_line(err: BaseException) -> str:
    """The error's message on one line."""
    return " ".join(str(err).split()) or type(err).__name__
