"""The command line's own error: a runtime failure worth one line to the user."""

from __future__ import annotations


class CommandError(Exception):
    """A command could not do its job (nobody connected, a child process failed, ...).

    ``main`` prints it as ``framewire: error: <message>`` and exits with ``exit_code``.
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
