"""The `gptkit` command line: parse options, call one library function, render the result.

One module per command (cli/prepare.py, data.py, train.py, finetune.py, eval.py, sample.py, serve.py, report.py,
ablate.py, tokenize.py, export.py, inspect.py), each registering with the root app of cli/app.py; this module imports them and
holds `main`, the entry point of the console script and of `python -m gptkit`.

Conventions every command follows:
  * stdout carries data only (a path, generated text, JSON with --json); people read stderr.
  * exit codes: 0 ok, 1 failure, 2 bad usage, 130/143 interrupted by Ctrl-C/SIGTERM.
  * a mistake prints `Error: ...` (and a `Hint: ...`), never a traceback; GPTKIT_DEBUG=1 shows it.
  * torch is imported inside the commands, so `gptkit --help` answers instantly.
  * colour follows Rich: off when NO_COLOR is set or stderr is not a terminal.
"""

from __future__ import annotations

import os
import sys

import typer

from gptkit.cli import ablate, data, eval, export, finetune, inspect, prepare, report, sample, serve, tokenize, train  # noqa: F401  (each registers its commands)
from gptkit.cli.app import app
from gptkit.cli.train import PRESET_NAMES
from gptkit.console import err
from gptkit.errors import GptkitError, UsageError

__all__ = ["PRESET_NAMES", "app", "main"]

# The parser's exception type: click's, or the copy of click that newer typer releases carry.
ParserError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _print_error(error: GptkitError) -> None:
    from rich.markup import escape  # messages may hold [brackets]: print them, don't parse them

    label = "[bold yellow]Interrupted:[/]" if getattr(error, "signum", None) else "[bold red]Error:[/]"
    err.print(f"{label} {escape(error.message)}", highlight=False, soft_wrap=True)
    if error.hint:
        err.print(f"[dim]Hint:[/] {escape(error.hint)}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with its code; library errors become one `Error:` line."""
    debug = os.environ.get("GPTKIT_DEBUG", "") not in ("", "0")
    try:
        result = app(args=argv, prog_name="gptkit", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except typer.Exit as e:
        code = e.exit_code
    except ParserError as e:  # bad usage found by the parser: exit code 2, one line like every error
        ctx = getattr(e, "ctx", None)
        if e.format_message():  # empty when the parser already printed the help (no arguments given)
            _print_error(UsageError(e.format_message(), hint=f"see `{ctx.command_path if ctx else 'gptkit'} --help`"))
        code = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("Interrupted.")
        code = 130
    except GptkitError as e:
        if debug:
            raise
        _print_error(e)
        signum = getattr(e, "signum", None)
        code = 128 + signum if signum else 2 if isinstance(e, UsageError) else 1
    except BrokenPipeError:  # `gptkit sample | head`: the reader left, which is fine
        sys.stderr.close()
        code = 0
    except SystemExit as e:
        # The parser catches a broken pipe itself, wraps the streams so that nothing more is written, and
        # exits 1. The reader leaving is a normal end in a pipeline (`set -o pipefail` scripts must go
        # on), so it is 0 here as well, whoever noticed it first.
        if "PacifyFlushWrapper" not in type(sys.stdout).__name__:
            raise
        code = 0 if e.code in (None, 0, 1) else e.code
    except Exception as e:  # a bug: say so in one line unless debugging
        if debug:
            raise
        err.print(f"[bold red]Error:[/] unexpected {type(e).__name__}: {e}", highlight=False, soft_wrap=True)
        err.print("[dim]Hint:[/] run again with GPTKIT_DEBUG=1 for the traceback, and please report it", highlight=False)
        code = 1
    # A torchrun worker on gloo exits without the interpreter's shutdown, which can abort it (see
    # distributed.exit_process). Only commands that train import gptkit.distributed (and torch).
    distributed = sys.modules.get("gptkit.distributed")
    if distributed is not None and distributed.needs_hard_exit():
        distributed.exit_process(code)
    sys.exit(code)
