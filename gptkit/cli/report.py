"""`gptkit report`: compare training runs (loss curves as a PNG, a markdown table)."""

from __future__ import annotations

from pathlib import Path

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
    png: Path = typer.Option(Path("loss.png"), "--png", help="Where to draw the loss curves."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Draw the PNG (needs matplotlib: pip install 'gptkit[report]')."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs' summaries as JSON instead of markdown."),
) -> None:
    """Compare training runs: loss curves as a PNG, a markdown table (config differences, best val
    loss, tokens/s, wall time) on stdout."""
    from gptkit.report import report as make_report

    result = make_report(runs, png if plot else None)
    if result.png is not None:
        _log(f"loss curves: {result.png}")
    if as_json:
        _emit_json(result.summaries)
    else:
        print(result.markdown)
