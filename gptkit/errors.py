"""The one exception type the CLI turns into a one-line message.

Library code raises GptkitError for every mistake a user can make (a missing file, a bad option, a
corrupted checkpoint). The CLI prints `Error: <message>` and, on the next line, `Hint: <hint>`,
then exits with code 1. Anything else is a bug and shows a traceback only with GPTKIT_DEBUG=1.
"""

from __future__ import annotations


class GptkitError(Exception):
    """A problem the user can fix. `message` says what went wrong, `hint` how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(GptkitError):
    """Bad usage (an invalid option value): the CLI exits with code 2, like a parse error."""
