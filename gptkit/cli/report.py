"""`gptkit report`: compare training runs (loss curves as a PNG, a markdown table)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from gptkit.cli.app import app
from gptkit.console import emit_json as _emit_json, log as _log


@app.command(
    epilog="Examples:\n\n"
    "  gptkit report out/baseline\n\n"
    "  gptkit report out/lr-1e-3 out/lr-3e-3 --png compare.png > compare.md",
)
def report(
    runs: list[Path] = typer.Argument(..., help="Run folders written by `gptkit train`."),
    png: Optional[Path] = typer.Option(
        None, "--png", help="Where to draw the loss curves.  [default: loss.png in the run folder; for several runs, in the folder that holds them]",
    ),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Draw the PNG (needs matplotlib: pip install 'gptkit[report]')."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs' summaries as JSON instead of markdown."),
) -> None:
    """Compare training runs: loss curves as a PNG, a markdown table (config differences, best val
    loss, tokens/s, wall time) on stdout."""
    from gptkit.report import report as make_report

    result = make_report(runs, (png or default_png(runs)) if plot else None)
    if result.png is not None:
        _log(f"loss curves: {result.png}")
    if as_json:
        _emit_json(result.summaries)
    else:
        print(result.markdown)


def default_png(runs: list[Path]) -> Path:
    """loss.png beside the runs it draws (never in whatever folder the command happens to run in)."""
    common = Path(os.path.commonpath([os.path.abspath(run) for run in runs]))
    png = (common if common.is_dir() else common.parent) / "loss.png"
    return png.relative_to(Path.cwd()) if png.is_relative_to(Path.cwd()) else png
