"""What the CLI prints: data to stdout, people's messages to stderr.

Rich's console turns colour off by itself when NO_COLOR is set or stderr is not a terminal.
"""

from __future__ import annotations

import json

from rich.console import Console

err = Console(stderr=True, soft_wrap=True)  # people
CONTEXT = {"help_option_names": ["-h", "--help"]}  # every command takes -h as well as --help


def log(text: str) -> None:
    """A plain message on stderr (never parsed as Rich markup)."""
    err.print(text, markup=False, highlight=False)


def emit_json(obj) -> None:
    """One JSON document on stdout, on one line."""
    print(json.dumps(obj, indent=None, default=str))
