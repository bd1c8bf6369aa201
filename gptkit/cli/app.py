"""The root `gptkit` typer app that every command module registers with (see cli/__init__.py)."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

import typer

from gptkit import __version__
from gptkit.console import CONTEXT

app = typer.Typer(
    name="gptkit",
    help="From raw text to a trained, sampled GPT.",
    epilog="Example, the whole pipeline:\n\n  gptkit prepare shakespeare && gptkit train && gptkit sample",
    context_settings=CONTEXT,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        print(f"gptkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


@contextmanager
def exit_at_once_on_ctrl_c():
    """Ctrl-C while a command imports torch: say so and exit 130 at once. Nothing is written yet, and a
    KeyboardInterrupt raised while torch's C++ start-up code runs would abort the process instead."""

    def stop(signum, frame):
        os.write(2, b"Interrupted.\n")
        os._exit(130)

    try:
        previous = signal.signal(signal.SIGINT, stop)
    except ValueError:  # not the main thread (a test harness): keep Python's KeyboardInterrupt
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
