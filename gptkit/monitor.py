"""Watching a training run: a live progress bar for people, JSON lines for programs.

`train()` reports to a Monitor: `step` every log interval, `evaluation` after each eval, `message`
for anything else. Three monitors ship:

    RichMonitor    a progress bar with step, loss, lr, tokens/s and ETA (stderr is a terminal)
    PlainMonitor   one line per report (stderr is a file or pipe: CI logs, `2> train.log`)
    Monitor        the silent base class, for library use

Independently of the monitor, every run appends to `metrics.jsonl` in its run folder (MetricsLog).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Monitor:
    """Silent monitor; subclasses render the same reports."""

    def start(self, total_steps: int, first_step: int) -> None: ...

    def step(self, record: dict) -> None:
        """record: step, loss, lr, tokens_per_sec, ms_per_iter, eta_s."""

    def evaluation(self, record: dict) -> None:
        """record: step, train_loss, val_loss, best (bool)."""

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainMonitor(Monitor):
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def step(self, r: dict) -> None:
        self._print(
            f"step {r['step']:>6} | loss {r['loss']:.4f} | lr {r['lr']:.2e} | "
            f"{r['tokens_per_sec']:,.0f} tok/s | {r['ms_per_iter']:.1f} ms/iter | ETA {format_duration(r['eta_s'])}"
        )

    def evaluation(self, r: dict) -> None:
        mark = "  (best)" if r.get("best") else ""
        self._print(f"eval {r['step']:>6} | train loss {r['train_loss']:.4f} | val loss {r['val_loss']:.4f}{mark}")

    def message(self, text: str) -> None:
        self._print(text)


class RichMonitor(Monitor):
    """A live bar on stderr; evaluations and messages scroll above it."""

    def __init__(self, console):
        self.console = console
        self.progress = None

    def start(self, total_steps: int, first_step: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss [cyan]{task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[speed]} tok/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=first_step, loss="-", lr="-", speed="-")
        self.progress.start()

    def step(self, r: dict) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=r["step"],
                loss=f"{r['loss']:.4f}",
                lr=f"{r['lr']:.2e}",
                speed=f"{r['tokens_per_sec']:,.0f}",
            )

    def evaluation(self, r: dict) -> None:
        mark = " [green](best)" if r.get("best") else ""
        self.console.print(f"step {r['step']}: train loss {r['train_loss']:.4f}, val loss [bold]{r['val_loss']:.4f}[/]{mark}")

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class MetricsLog:
    """metrics.jsonl: one JSON object per line, with `step`, a wall-clock `time`, and the measures."""

    def __init__(self, path: str | Path, keep_until_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_until_step is None:
            self.path.write_text("")
        elif self.path.exists():
            # Resuming: drop records from after the checkpoint, they are about to be redone.
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= keep_until_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")
