"""`gptkit inspect`: a model's parts and costs, its attention maps, its next-token guesses, two models side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from gptkit.cli.app import app
from gptkit.console import emit_json, log
from gptkit.errors import UsageError

MODEL_PANEL, STEP_PANEL, TEXT_PANEL = "What to inspect", "The training step to estimate", "On a text (needs --ckpt)"


@app.command(
    name="inspect",
    epilog="Examples:\n\n"
    "  gptkit inspect --ckpt out/\n\n"
    "  gptkit inspect --preset gpt2-124m --batch-size 12 --block-size 1024 --dtype bfloat16 --json\n\n"
    "  gptkit inspect --ckpt out/ --attention 'ROMEO: But soft' --out attention/ --layer 2 --head 1\n\n"
    "  gptkit inspect --ckpt out/ --next-token 'ROMEO: But so'\n\n"
    "  gptkit inspect --compare shakespeare-char-cpu out/",
)
def inspect_command(
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", help="A checkpoint file, or a run folder (its ckpt.safetensors).", rich_help_panel=MODEL_PANEL),
    preset: Optional[str] = typer.Option(None, "--preset", help="A preset's model, no checkpoint needed.", rich_help_panel=MODEL_PANEL),
    config_file: Optional[Path] = typer.Option(None, "--config", help="A config file's model (over --preset, if given).", rich_help_panel=MODEL_PANEL),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", min=1, help="Vocabulary of a preset/config (default: from --data's meta.json).", rich_help_panel=MODEL_PANEL),
    data: Optional[Path] = typer.Option(None, "--data", help="Data folder whose meta.json gives a preset/config its vocabulary.", rich_help_panel=MODEL_PANEL),
    compare: Optional[tuple[str, str]] = typer.Option(None, "--compare", help="Two checkpoints, run folders, presets or .toml configs, side by side.", rich_help_panel=MODEL_PANEL),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Sequences per step (default: the model's training batch).", rich_help_panel=STEP_PANEL),
    block_size: Optional[int] = typer.Option(None, "--block-size", min=1, help="Tokens per sequence (default: the model's context).", rich_help_panel=STEP_PANEL),
    dtype: str = typer.Option("float32", "--dtype", help="Autocast precision: float32, bfloat16 or float16 (also the KV cache's).", rich_help_panel=STEP_PANEL),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adamw or muon (default: the model's training setting).", rich_help_panel=STEP_PANEL),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Estimate a training step's memory (a few seconds).", rich_help_panel=STEP_PANEL),
    measure: bool = typer.Option(False, "--measure", help="Also run the step for real on the CPU and measure its peak (allocates it!).", rich_help_panel=STEP_PANEL),
    attention: Optional[str] = typer.Option(None, "--attention", help="Attention weights of every layer and head on this text, as PNGs.", rich_help_panel=TEXT_PANEL),
    out: Path = typer.Option(Path("attention"), "--out", "-o", help="Folder for --attention's PNGs.", rich_help_panel=TEXT_PANEL),
    layer: int = typer.Option(0, "--layer", min=0, help="The layer shown in the terminal by --attention.", rich_help_panel=TEXT_PANEL),
    head: int = typer.Option(0, "--head", min=0, help="The head shown in the terminal by --attention.", rich_help_panel=TEXT_PANEL),
    next_token: Optional[str] = typer.Option(None, "--next-token", help="The likeliest next tokens at each position of this text.", rich_help_panel=TEXT_PANEL),
    top: int = typer.Option(5, "--top", min=1, help="How many next tokens --next-token lists.", rich_help_panel=TEXT_PANEL),
    device: str = typer.Option("cpu", "--device", help="Where --attention and --next-token run: cpu, cuda, mps or auto.", rich_help_panel=TEXT_PANEL),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """What a model is made of and what it costs: parameters per component, FLOPs per token, KV-cache
    bytes, and the memory of a training step (weights, gradients, optimizer state, activations), from a
    checkpoint or from a preset/config without one. With a text: attention maps or next-token guesses."""
    from gptkit import inspect_model

    modes = [name for name, given in (("--compare", compare), ("--attention", attention), ("--next-token", next_token)) if given]
    if len(modes) > 1:
        raise UsageError(f"give one of {', '.join(modes)} at a time")
    if dtype not in inspect_model.DTYPE_BYTES:
        raise UsageError(f"unknown --dtype {dtype!r}", hint="use float32, bfloat16 or float16")
    if optimizer not in (None, "adamw", "muon"):
        raise UsageError(f"unknown --optimizer {optimizer!r}", hint="use adamw or muon")
    stdout = Console(soft_wrap=True)
    if compare:
        a, b = (inspect_model.subject_from(c, vocab_size, data) for c in compare)
        result = inspect_model.compare(*(inspect_model.summarize(s, batch_size, block_size, dtype, optimizer, memory) for s in (a, b)))
        emit_json(result) if as_json else _render_compare(result, stdout)
        return
    if attention is not None or next_token is not None:
        _on_text(ckpt, preset, config_file, attention, next_token, out, layer, head, top, device, as_json, stdout)
        return
    subject = inspect_model.resolve_subject(ckpt, preset, config_file, vocab_size, data)
    summary = inspect_model.summarize(subject, batch_size, block_size, dtype, optimizer, memory)
    if measure:
        from gptkit.memory_estimate import measure_training_memory

        m = summary["memory"] or {}
        log("measuring a real training step on the CPU ...")
        summary["measured_peak_bytes"] = measure_training_memory(
            subject.config, m.get("batch_size") or batch_size or 1, m.get("block_size") or block_size, dtype,
            m.get("optimizer") or optimizer or "adamw",
        )
    emit_json(summary) if as_json else _render_summary(summary, stdout)


def _on_text(ckpt, preset, config_file, attention, next_token, out, layer, head, top, device, as_json, stdout) -> None:
    from gptkit.inference import load_model
    from gptkit.inspect_model import checkpoint_path

    if ckpt is None or preset or config_file:
        raise UsageError("--attention and --next-token need a trained model: give --ckpt", hint="the weights of a preset are random")
    loaded = load_model(checkpoint_path(ckpt), device, "float32")
    if next_token is not None:
        from gptkit.probes import next_token_table

        rows = next_token_table(loaded, next_token, top)
        emit_json({"text": next_token, "positions": rows}) if as_json else _render_next_tokens(rows, stdout)
        return
    from gptkit.attention_plot import plot_attention
    from gptkit.probes import attention_for_text

    config = loaded.model.config
    if layer >= config.n_layer or head >= config.n_head:
        raise UsageError(f"--layer {layer} --head {head}: the model has {config.n_layer} layers of {config.n_head} heads",
                         hint=f"layers 0..{config.n_layer - 1}, heads 0..{config.n_head - 1}")
    probe = attention_for_text(loaded, attention)
    pngs = plot_attention(probe, out)
    log(f"attention maps: {len(pngs)} PNGs in {out}")
    chosen = probe.weights[layer, head]
    if as_json:
        emit_json({"text": attention, "tokens": probe.tokens, "ids": probe.ids, "pngs": [str(p) for p in pngs],
                   "layer": layer, "head": head, "weights": [[round(float(w), 6) for w in row] for row in chosen]})
    else:
        _render_attention(chosen, probe.tokens, layer, head, stdout)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024


def _count(n) -> str:
    return "-" if n is None else f"{n:,}" if isinstance(n, int) else f"{n:.4f}"


def _flops(n: int) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}FLOP"
    return f"{n} FLOP"


def _show(token: str) -> str:
    return token.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "\u2423")


def _render_summary(s: dict, out: Console) -> None:
    c, p = s["config"], s["parameters"]
    where = f", step {s['step']:,}, val loss {_count(s['val_loss'])}" if s["kind"] == "checkpoint" else ""
    out.print(f"[bold]{s['source']}[/]{where}", highlight=False)
    out.print(f"{c['n_layer']} layers x {c['n_head']} heads x {c['n_embd']} wide, context {c['block_size']}, "
              f"vocab {c['vocab_size']:,}; position {c['position']}, norm {c['norm']}, mlp {c['mlp']}", highlight=False)
    if s["kind"] != "checkpoint":
        out.print(f"[dim]vocab_size from {s['vocab_source']}[/]", highlight=False)
    table = Table(title="parameters", title_justify="left")
    table.add_column("component")
    table.add_column("parameters", justify="right")
    table.add_column("share", justify="right")
    for name, n in p["by_component"].items():
        note = " (tied: = token embedding)" if name == "output" and p["tied_embeddings"] else ""
        if n or note:
            table.add_row(name + note, f"{n:,}", f"{100 * n / p['total']:.1f}%")
    table.add_row("[bold]total[/]", f"[bold]{p['total']:,}[/]", "100%")
    out.print(table)
    f, kv = s["flops_per_token"], s["kv_cache"]
    out.print(f"FLOPs per token (context {f['context']}): forward {_flops(f['forward'])} "
              f"(weights {_flops(f['forward_matmul'])} + attention {_flops(f['forward_attention'])}), "
              f"training {_flops(f['training'])}", highlight=False)
    out.print(f"KV cache ({kv['dtype']}): {_size(kv['bytes_per_token'])} per token, {_size(kv['bytes_full_context'])} "
              f"for a full context ({kv['n_kv_head']} key/value heads of {kv['head_size']})", highlight=False)
    m = s["memory"]
    if m:
        table = Table(title=f"a training step: batch {m['batch_size']} x {m['block_size']} tokens, {m['dtype']}, "
                      f"{m['optimizer']}", title_justify="left")
        table.add_column("memory")
        table.add_column("bytes", justify="right")
        rows = [("weights", m["weights_bytes"]), ("gradients", m["gradients_bytes"]), ("optimizer state", m["optimizer_bytes"]),
                ("activations (saved for backward)", m["activation_bytes"])]
        rows += [(f"  {k}", v) for k, v in m["activation_bytes_by_component"].items() if v]
        rows += [("sum", m["sum_bytes"]), ("[bold]peak (simulated step)[/]", m["peak_bytes"])]
        if s.get("measured_peak_bytes") is not None:
            rows.append(("peak (measured on this CPU)", s["measured_peak_bytes"]))
        for name, value in rows:
            table.add_row(name, _size(value))
        out.print(table)


def _render_compare(r: dict, out: Console) -> None:
    if r["config_differences"]:
        table = Table(title="config differences", title_justify="left")
        for column in ("setting", r["a"], r["b"]):
            table.add_column(column)
        for key, (x, y) in r["config_differences"].items():
            table.add_row(key, str(x), str(y))
        out.print(table)
    else:
        out.print("same model config")
    table = Table(title="side by side", title_justify="left")
    table.add_column("")
    for column in (r["a"], r["b"], "b / a"):
        table.add_column(column, justify="right")
    for row in r["rows"]:
        fmt = _size if row["unit"] == "bytes" else _count
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        table.add_row(row["label"], fmt(row["a"]), fmt(row["b"]), ratio)
    out.print(table)


def _render_next_tokens(rows: list[dict], out: Console) -> None:
    table = Table(title="next-token probabilities", title_justify="left")
    table.add_column("pos", justify="right")
    table.add_column("token")
    table.add_column("actual next (p)")
    table.add_column("likeliest next tokens")
    for row in rows:
        nxt = row["next"]
        actual = "-" if nxt is None else f"{_show(nxt['token'])} ({nxt['p']:.3f})"
        guesses = "  ".join(f"{_show(t['token'])} {t['p']:.3f}" for t in row["top"])
        table.add_row(str(row["position"]), _show(row["token"]), actual, guesses)
    out.print(table, markup=False, highlight=False)


def _render_attention(weights, tokens: list[str], layer: int, head: int, out: Console) -> None:
    from rich.markup import escape

    labels = [_show(t) for t in tokens]
    left = max(len(t) for t in labels) + 1
    # Plain lines rather than a Table: one row per line however long the text (a table would shrink columns).
    out.print(f"layer {layer}, head {head}: row = query, column = key, weights x100", highlight=False)
    out.print(" " * left + "".join(escape(f"{t:>5}") for t in labels), highlight=False, soft_wrap=True)
    for i, row in enumerate(weights.tolist()):
        cells = []
        for w in row[: i + 1]:  # keys after the query are masked: nothing to show
            level = int(40 + 215 * w)  # brighter = more attention
            cells.append(f"[on rgb({level // 3},{level // 2},{level})]{round(100 * w):>5}[/]")
        out.print(escape(f"{labels[i]:<{left}}") + "".join(cells), highlight=False, soft_wrap=True)
