"""`gptkit report`: compare training runs, as a picture and as a table.

    result = report(["out/lr-1e-3", "out/lr-3e-3"], png="compare.png")
    print(result.markdown)

Everything comes from what `train` leaves in each run folder: `metrics.jsonl` (the curves, speed and
wall time) and `config.toml` (the settings). The table shows, per run, the steps reached, the best
val loss and where it was reached, the last training loss, the median tokens/s, the wall time, and
a column for every setting whose value differs between the runs, so an experiment reads at a glance.
The PNG draws each run in its own colour: the training loss thin, the val loss dashed with dots.

matplotlib is an optional extra (`pip install 'gptkit[report]'`); the table needs nothing.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gptkit.errors import GptkitError, Problems
from gptkit.fileio import atomic_open
from gptkit.monitor import format_duration

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

IGNORED_SETTINGS = {"out"}  # differs between any two runs, says nothing about them


@dataclass
class RunSummary:
    name: str
    path: str
    settings: dict = field(default_factory=dict)  # config.toml's [model] and [train], flattened
    steps: list[int] = field(default_factory=list)  # the training loss at each progress report
    losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)  # the val loss at each evaluation
    val_losses: list[float] = field(default_factory=list)
    last_step: int | None = None
    best_val_loss: float | None = None
    best_step: int | None = None
    last_train_loss: float | None = None
    tokens_per_sec: float | None = None  # median over the progress reports
    wall_s: float | None = None  # training time, summed over resumed sessions


@dataclass
class Report:
    summaries: list[dict]
    markdown: str
    png: Path | None


def load_run(run_dir: str | Path) -> RunSummary:
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not run_dir.is_dir():
        raise GptkitError(f"run folder {run_dir} does not exist", hint="pass the --out folder of a `gptkit train` run")
    if not metrics.is_file():
        raise GptkitError(f"{run_dir} is not a training run: it has no metrics.jsonl", hint="pass the --out folder of a `gptkit train` run")
    summary = RunSummary(name=run_dir.name or str(run_dir), path=str(run_dir))
    config = run_dir / "config.toml"
    if config.is_file():
        try:
            tables = tomllib.loads(config.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise GptkitError(f"{config} is not valid TOML ({e})") from None
        summary.settings = {k: v for table in tables.values() if isinstance(table, dict) for k, v in table.items()}

    speeds, first_time, last_time = [], None, None
    for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line a crash cut short
        if not isinstance(r, dict) or not isinstance(r.get("step"), int):
            continue
        first_time = first_time if first_time is not None else r.get("time")
        last_time = r.get("time", last_time)
        summary.last_step = max(summary.last_step or 0, r["step"])
        if isinstance(r.get("loss"), (int, float)):
            summary.steps.append(r["step"])
            summary.losses.append(r["loss"])
            summary.last_train_loss = r["loss"]
        if isinstance(r.get("tokens_per_sec"), (int, float)):
            speeds.append(r["tokens_per_sec"])
        if isinstance(r.get("elapsed_s"), (int, float)):
            summary.wall_s = r["elapsed_s"]
        if isinstance(r.get("val_loss"), (int, float)):
            summary.eval_steps.append(r["step"])
            summary.val_losses.append(r["val_loss"])
            if summary.best_val_loss is None or r["val_loss"] < summary.best_val_loss:
                summary.best_val_loss, summary.best_step = r["val_loss"], r["step"]
    summary.tokens_per_sec = statistics.median(speeds) if speeds else None
    if summary.wall_s is None and isinstance(first_time, (int, float)) and isinstance(last_time, (int, float)):
        summary.wall_s = last_time - first_time  # metrics from before elapsed_s was recorded
    return summary


def differing_settings(runs: list[RunSummary]) -> list[str]:
    """The settings whose values are not the same in every run, in config order."""
    names = []
    for run in runs:
        names += [k for k in run.settings if k not in names and k not in IGNORED_SETTINGS]
    return [k for k in names if len({json.dumps(run.settings.get(k)) for run in runs}) > 1]


def markdown_table(runs: list[RunSummary]) -> str:
    def number(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    differing = differing_settings(runs) if len(runs) > 1 else []
    header = ["run", "steps", "best val loss", "last train loss", "tokens/s", "wall time"] + differing
    rows = []
    for run in runs:
        best = "-" if run.best_val_loss is None else f"{run.best_val_loss:.4f} (step {run.best_step})"
        wall = "-" if run.wall_s is None else format_duration(run.wall_s)
        settings = [str(run.settings.get(k, "-")) for k in differing]
        rows.append([run.name, number(run.last_step, "d"), best, number(run.last_train_loss, ".4f"),
                     number(run.tokens_per_sec, ",.0f"), wall] + settings)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_loss_curves(runs: list[RunSummary], png: str | Path) -> Path:
    """Draw every run's training and val loss against the step into a PNG (written atomically)."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    except ImportError:
        raise GptkitError(
            "drawing the loss curves needs matplotlib, which is not installed",
            hint="pip install 'gptkit[report]' (or pip install matplotlib), or pass --no-plot for the table alone",
        ) from None
    png = Path(png)
    figure = Figure(figsize=(9, 5), dpi=110)
    axes = figure.add_subplot()
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        if run.steps:
            axes.plot(run.steps, run.losses, color=color, linewidth=1.0, alpha=0.6, label=f"{run.name} train")
        if run.eval_steps:
            axes.plot(run.eval_steps, run.val_losses, color=color, linewidth=1.8, linestyle="--", marker="o",
                      markersize=3.5, label=f"{run.name} val")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title("training runs" if len(runs) > 1 else f"training run {runs[0].name}")
    axes.grid(True, alpha=0.3)
    if any(run.steps or run.eval_steps for run in runs):
        axes.legend(fontsize="small")
    figure.tight_layout()
    with atomic_open(png, "wb") as f:
        figure.savefig(f, format="png")
    return png


def report(run_dirs: list[str | Path], png: str | Path | None = "loss.png") -> Report:
    """Summarise the runs (every unreadable run named at once) and, unless png is None, plot them."""
    if not run_dirs:
        raise GptkitError("no run folders given", hint="pass one or more --out folders of `gptkit train`")
    problems, runs = Problems(), []
    for run_dir in run_dirs:
        with problems.check():
            runs.append(load_run(run_dir))
    problems.raise_if_any()
    names = [run.name for run in runs]
    for run in runs:
        if names.count(run.name) > 1:  # out/a/run and out/b/run: tell them apart by path
            run.name = run.path
    written = plot_loss_curves(runs, png) if png is not None else None
    return Report([asdict(run) for run in runs], markdown_table(runs), written)
