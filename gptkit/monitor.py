"""Watching a training run: a live panel for people, JSON lines (and TensorBoard) for programs.

`train()` reports to a Monitor: `step` every log interval, `evaluation` after each eval, `message`
for anything else. Three monitors ship:

    RichMonitor    a live panel redrawn in place (stderr is a terminal): progress, loss, val loss,
                   lr, grad norm, tokens/s, MFU, ETA, memory
    PlainMonitor   one line per report (stderr is a file or pipe: CI logs, `2> train.log`)
    Monitor        the silent base class, for library use

Independently of the monitor, every run appends to `metrics.jsonl` in its run folder (MetricsLog),
and with `--tensorboard` writes the same measures as TensorBoard scalars (TensorBoardLog). The
records' fields are listed in docs/monitoring.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gptkit.errors import GptkitError
from gptkit.fileio import atomic_write_text, disk_error


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _number(value, spec: str, missing: str = "-") -> str:
    """Format a measure that may be absent (None): no val loss before the first eval, no MFU on CPU."""
    return missing if value is None else format(value, spec)


def _megabytes(value, missing: str = "-") -> str:
    if value is None:
        return missing
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


class Monitor:
    """Silent monitor; subclasses render the same reports."""

    def start(self, total_steps: int, first_step: int) -> None: ...

    def step(self, record: dict) -> None:
        """record: step, loss, lr, grad_norm, tokens_per_sec, ms_per_iter, eta_s, elapsed_s, and when
        known mfu (a fraction), peak_memory_mb, skipped (updates skipped since the last report)."""

    def evaluation(self, record: dict) -> None:
        """record: step, train_loss, val_loss, best (bool)."""

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainMonitor(Monitor):
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.total = None

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, total_steps: int, first_step: int) -> None:
        self.total = total_steps

    def step(self, r: dict) -> None:
        parts = [
            f"step {r['step']:>6}" + (f"/{self.total}" if self.total else ""),
            f"loss {_number(r['loss'], '.4f')}",
            f"lr {r['lr']:.2e}",
            f"grad norm {_number(r.get('grad_norm'), '.3f')}",
            f"{r['tokens_per_sec']:,.0f} tok/s",
            f"{r['ms_per_iter']:.1f} ms/iter",
        ]
        if r.get("mfu") is not None:
            parts.append(f"MFU {100 * r['mfu']:.1f}%")
        if r.get("peak_memory_mb") is not None:
            parts.append(f"mem {_megabytes(r['peak_memory_mb'])}")
        parts.append(f"ETA {format_duration(r['eta_s'])}")
        if r.get("skipped"):
            parts.append(f"{r['skipped']} skipped")
        self._print(" | ".join(parts))

    def evaluation(self, r: dict) -> None:
        mark = "  (best)" if r.get("best") else ""
        self._print(f"eval {r['step']:>6} | train loss {r['train_loss']:.4f} | val loss {r['val_loss']:.4f}{mark}")

    def message(self, text: str) -> None:
        self._print(text)


class RichMonitor(Monitor):
    """A live panel on stderr, redrawn in place a few times a second; evaluations and messages
    scroll above it. The panel is built from the latest reports each time Rich redraws it."""

    def __init__(self, console, title: str = "gptkit train"):
        self.console = console
        self.title = title
        self.live = None
        self.total = 0
        self.latest: dict = {}
        self.last_eval: dict = {}
        self.best: dict = {}

    def start(self, total_steps: int, first_step: int) -> None:
        from rich.live import Live

        self.total = total_steps
        self.latest = {"step": first_step}
        self.live = Live(
            console=self.console,
            get_renderable=self.render,
            refresh_per_second=4,
            redirect_stdout=False,  # stdout carries data, never the panel
            redirect_stderr=False,
        )
        self.live.start()

    def render(self):
        from rich.console import Group
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        r, step = self.latest, self.latest.get("step", 0)
        bar = Table.grid(expand=True, padding=(0, 1))
        bar.add_column(ratio=1)
        bar.add_column(justify="right")
        bar.add_row(ProgressBar(total=max(self.total, 1), completed=step), f"step {step:,}/{self.total:,}")

        val = _number(self.last_eval.get("val_loss"), ".4f", "—")
        if self.best:
            val += f"  (best {self.best['val_loss']:.4f} @ {self.best['step']:,})"
        mfu = r.get("mfu")
        rows = [
            ("loss", _number(r.get("loss"), ".4f", "—"), "val loss", val),
            ("lr", _number(r.get("lr"), ".2e", "—"), "grad norm", _number(r.get("grad_norm"), ".3f", "—")),
            ("tokens/s", _number(r.get("tokens_per_sec"), ",.0f", "—"), "MFU", "—" if mfu is None else f"{100 * mfu:.1f}%"),
            ("ETA", format_duration(r["eta_s"]) if "eta_s" in r else "—", "elapsed", format_duration(r.get("elapsed_s", 0))),
            ("ms/iter", _number(r.get("ms_per_iter"), ".1f", "—"), "memory", _megabytes(r.get("peak_memory_mb"), "—")),
        ]
        stats = Table.grid(padding=(0, 2))
        for justify in ("left", "right", "left", "left"):
            stats.add_column(justify=justify)
        for name, value, name2, value2 in rows:
            stats.add_row(f"[dim]{name}[/]", f"[bold cyan]{value}[/]", f"[dim]{name2}[/]", f"[bold]{value2}[/]")
        return Panel(Group(bar, stats), title=self.title, title_align="left", border_style="blue")

    def step(self, r: dict) -> None:
        self.latest = r

    def evaluation(self, r: dict) -> None:
        self.last_eval = r
        if r.get("best"):
            self.best = r
        mark = " [green](best)" if r.get("best") else ""
        self.console.print(f"step {r['step']}: train loss {r['train_loss']:.4f}, val loss [bold]{r['val_loss']:.4f}[/]{mark}")

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()  # leaves the final panel on screen
            self.live = None


class MetricsLog:
    """metrics.jsonl: one JSON object per line, with `step`, a wall-clock `time`, and the measures."""

    def __init__(self, path: str | Path, keep_until_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_until_step is None:
            atomic_write_text(self.path, "")
        elif self.path.exists():
            # Resuming: drop records from after the checkpoint, they are about to be redone. A line a
            # crash cut short is not valid JSON and goes too.
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= keep_until_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        try:
            self.file.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
            self.file.flush()
        except OSError as e:
            raise disk_error(e, self.path, True) or e from None

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # a full disk already reported by write()


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def require_tensorboard():
    """torch's SummaryWriter, or a clear error when the optional `tensorboard` package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GptkitError(
            "--tensorboard needs the tensorboard package, which is not installed",
            hint="pip install 'gptkit[tensorboard]' (or pip install tensorboard), or train without --tensorboard",
        ) from None
    return SummaryWriter


class TensorBoardLog:
    """The measures of metrics.jsonl as TensorBoard scalars: `tensorboard --logdir OUT/tensorboard`."""

    TAGS = {
        "loss": "loss/train",
        "train_loss": "loss/train_eval",
        "val_loss": "loss/val",
        "lr": "optim/lr",
        "grad_norm": "optim/grad_norm",
        "tokens_per_sec": "speed/tokens_per_sec",
        "ms_per_iter": "speed/ms_per_iter",
        "mfu": "speed/mfu",
        "peak_memory_mb": "system/peak_memory_mb",
    }

    def __init__(self, folder: str | Path, purge_step: int | None = None):
        # purge_step: on resume, TensorBoard hides the events an earlier attempt wrote from this step on.
        self.writer = require_tensorboard()(log_dir=str(folder), purge_step=purge_step)

    def write(self, record: dict) -> None:
        for key, tag in self.TAGS.items():
            if isinstance(record.get(key), (int, float)):
                self.writer.add_scalar(tag, record[key], record["step"])

    def close(self) -> None:
        self.writer.close()
