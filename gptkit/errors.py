"""The one exception type the CLI turns into a one-line message.

Library code raises GptkitError for every mistake a user can make (a missing file, a bad option, a
corrupted checkpoint). The CLI prints `Error: <message>` and, on the next line, `Hint: <hint>`,
then exits with code 1 (2 for a UsageError: the command line itself is wrong). Anything else is a
bug and shows a traceback only with GPTKIT_DEBUG=1.

Where several independent things can be wrong at once (a run's config, data and folder; a list of
input files), Problems collects them and raises one error that names them all, so the user fixes
everything in one go instead of meeting the problems one run at a time.
"""

from __future__ import annotations

from contextlib import contextmanager


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


class Problems:
    """Collects the GptkitErrors of independent checks, to raise them as one.

        problems = Problems()
        with problems.check():
            check_one_thing()
        with problems.check():
            check_another()
        problems.raise_if_any()   # one error: "2 problems: (1) ...; (2) ..."
    """

    def __init__(self):
        self.errors: list[GptkitError] = []

    @contextmanager
    def check(self):
        """Record a GptkitError raised in the block, and carry on after it."""
        try:
            yield
        except GptkitError as e:
            self.errors.append(e)

    def raise_if_any(self) -> None:
        errors = self.errors
        if len(errors) == 1:
            raise errors[0]
        if errors:
            message = f"{len(errors)} problems: " + _numbered([e.message for e in errors])
            hint = _numbered([e.hint for e in errors]) or None
            # A usage mistake is exit code 2 whatever else is wrong: fixing the command line comes first.
            kind = UsageError if any(isinstance(e, UsageError) for e in errors) else GptkitError
            raise kind(message, hint=hint)


def _numbered(texts: list[str | None]) -> str:
    """'(1) a; (3) c': one line, so the CLI prints one Error: line; None entries keep their number."""
    return "; ".join(f"({i}) {text}" for i, text in enumerate(texts, 1) if text)
