"""The `gptkit` command line: parse options, call one library function, render the result.

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
from pathlib import Path
from typing import Optional

import typer

from gptkit import __version__
from gptkit.cli_export import EPILOG as EXPORT_EPILOG, export_cmd
from gptkit.cli_tokenize import tokenize_app
from gptkit.console import CONTEXT, emit_json as _emit_json, err, log as _log
from gptkit.errors import GptkitError, UsageError

# The parser's exception type: click's, or the copy of click that newer typer releases carry.
ParserError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

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
prepare_app = typer.Typer(
    help="Turn raw text into token shards that `train` reads.",
    epilog="Examples:\n\n  gptkit prepare shakespeare\n\n  gptkit prepare text notes/ --out data/notes",
    context_settings=CONTEXT,
    no_args_is_help=True,
)
app.add_typer(prepare_app, name="prepare")
app.add_typer(tokenize_app, name="tokenize")  # in cli_tokenize.py
app.command("export", epilog=EXPORT_EPILOG)(export_cmd)  # in cli_export.py


def _version(value: bool) -> None:
    if value:
        print(f"gptkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


# ---------------------------------------------------------------------------------------------------
# prepare

TOKENIZER_HELP = (
    "char (the corpus's characters; char:unk adds <unk>), bpe:N (gptkit's byte-level BPE with N ids), "
    "sp-bpe:N or sp-unigram:N (SentencePiece), a tiktoken encoding (gpt2, cl100k_base, o200k_base), or a PATH: "
    "a saved tokenizer, a data folder or a checkpoint whose tokenizer to reuse."
)


def _report_prepared(meta: dict, out: Path, as_json: bool) -> None:
    if as_json:
        _emit_json({"data": str(out), **meta})
    else:
        print(out)


@prepare_app.command(
    "shakespeare",
    epilog="Examples:\n\n"
    "  gptkit prepare shakespeare\n\n"
    "  gptkit prepare shakespeare --source tinyshakespeare.txt --tokenizer gpt2 --out data/shakespeare-gpt2",
)
def prepare_shakespeare_cmd(
    tokenizer: str = typer.Option("char", "--tokenizer", "-t", help=TOKENIZER_HELP),
    source: Optional[Path] = typer.Option(
        None, "--source", "-s", help="A local copy of tiny Shakespeare instead of downloading it (or set GPTKIT_SHAKESPEARE)."
    ),
    out: Path = typer.Option(Path("data/shakespeare"), "--out", "-o", help="Data folder to write."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of the text kept for validation (the end)."),
    as_json: bool = typer.Option(False, "--json", help="Print the data folder's meta.json on stdout."),
) -> None:
    """Download tiny Shakespeare (cached) and tokenize it. Prints the data folder on stdout."""
    from gptkit.prepare import prepare_shakespeare

    meta = prepare_shakespeare(out, tokenizer, source, val_fraction, log=_log)
    _report_prepared(meta, out, as_json)


@prepare_app.command(
    "text",
    epilog="Example:\n\n  gptkit prepare text notes/ book.txt --tokenizer gpt2 --out data/mine",
)
def prepare_text_cmd(
    paths: list[Path] = typer.Argument(..., help="Text files or folders (searched recursively); one document per file."),
    tokenizer: str = typer.Option("char", "--tokenizer", "-t", help=TOKENIZER_HELP),
    out: Path = typer.Option(Path("data/text"), "--out", "-o", help="Data folder to write."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of the text kept for validation (the end)."),
    as_json: bool = typer.Option(False, "--json", help="Print the data folder's meta.json on stdout."),
) -> None:
    """Tokenize your own UTF-8 text files. Prints the data folder on stdout."""
    from gptkit.prepare import prepare_text

    meta = prepare_text(paths, out, tokenizer, val_fraction, log=_log)
    _report_prepared(meta, out, as_json)


# ---------------------------------------------------------------------------------------------------
# train


# Listed here rather than read from config.PRESETS, which would import torch for --help.
PRESET_NAMES = (
    "shakespeare-char-cpu (default on CPU), shakespeare-char-cpu-fast, shakespeare-char (default on GPU), gpt2-124m"
)


@app.command(
    epilog="Examples:\n\n"
    "  gptkit train                # preset shakespeare-char-cpu, data/shakespeare\n\n"
    "  gptkit train --device cuda --preset shakespeare-char\n\n"
    "  gptkit train --max-iters 200 --eval-interval 50 --out out/quick\n\n"
    "  gptkit train --out out/quick --resume --max-iters 400\n\n"
    "  torchrun --standalone --nproc-per-node 4 -m gptkit train --preset gpt2-124m --data data/owt --grad-accum 10",
)
def train(
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Data folder from `gptkit prepare`.  [default: data/shakespeare]"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder for checkpoints and metrics.  [default: out]"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N | mps.  [default: auto]"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto | float32 | bfloat16 | float16 autocast.  [default: auto]"),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help=f"Named config: {PRESET_NAMES}."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML file with \\[model] and \\[train] tables."),
    max_iters: Optional[int] = typer.Option(None, "--max-iters", help="Optimizer steps."),
    eval_interval: Optional[int] = typer.Option(None, "--eval-interval", help="Steps between evaluations and checkpoints."),
    eval_iters: Optional[int] = typer.Option(None, "--eval-iters", help="Batches per split at each evaluation."),
    log_interval: Optional[int] = typer.Option(None, "--log-interval", help="Steps between progress reports."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (weights, batches, dropout)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Sequences per micro-batch."),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", "--lr", help="Peak learning rate."),
    min_lr: Optional[float] = typer.Option(None, "--min-lr", help="Learning rate at the end of the cosine decay."),
    warmup_iters: Optional[int] = typer.Option(None, "--warmup-iters", help="Linear warmup steps."),
    lr_decay_iters: Optional[int] = typer.Option(None, "--lr-decay-iters", help="Cosine decay length (0: max-iters)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay on matrices."),
    beta1: Optional[float] = typer.Option(None, "--beta1", help="AdamW beta1."),
    beta2: Optional[float] = typer.Option(None, "--beta2", help="AdamW beta2."),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="Clip the gradient norm to this (0: off)."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model.  [default: on for CUDA]"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adamw | muon (Muon for hidden matrices, AdamW for the rest)."),
    lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", help="cosine | linear | constant | wsd (warmup-stable-decay)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="random | epoch (shuffled, no repeats) | documents (epoch, windows start at documents)."),
    parallel: Optional[str] = typer.Option(None, "--parallel", help="Under torchrun: ddp (replicate the model) | fsdp (shard it)."),
    keep_checkpoints: Optional[int] = typer.Option(None, "--keep-checkpoints", help="Saved steps to keep (the best is kept besides).  [default: 3]", rich_help_panel="Robustness and monitoring"),
    on_bad_loss: Optional[str] = typer.Option(None, "--on-bad-loss", help="A NaN/inf or spiking loss: skip the update, or stop.  [default: skip]", rich_help_panel="Robustness and monitoring"),
    loss_spike_factor: Optional[float] = typer.Option(None, "--loss-spike-factor", help="A loss above this times the recent mean is a spike (0: off).  [default: 3]", rich_help_panel="Robustness and monitoring"),
    max_bad_steps: Optional[int] = typer.Option(None, "--max-bad-steps", help="Stop after this many bad steps in a row.  [default: 10]", rich_help_panel="Robustness and monitoring"),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard", help="Also write TensorBoard logs to OUT/tensorboard (pip install 'gptkit[tensorboard]').", rich_help_panel="Robustness and monitoring"),
    n_layer: Optional[int] = typer.Option(None, "--n-layer", help="Transformer blocks.", rich_help_panel="Model"),
    n_head: Optional[int] = typer.Option(None, "--n-head", help="Attention heads per block.", rich_help_panel="Model"),
    n_embd: Optional[int] = typer.Option(None, "--n-embd", help="Embedding width.", rich_help_panel="Model"),
    block_size: Optional[int] = typer.Option(None, "--block-size", help="Context length in tokens.", rich_help_panel="Model"),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="Dropout probability.", rich_help_panel="Model"),
    bias: Optional[bool] = typer.Option(None, "--bias/--no-bias", help="Biases in Linear and LayerNorm.", rich_help_panel="Model"),
    position: Optional[str] = typer.Option(None, "--position", help="learned | rope.", rich_help_panel="Model"),
    norm: Optional[str] = typer.Option(None, "--norm", help="layernorm | rmsnorm.", rich_help_panel="Model"),
    mlp: Optional[str] = typer.Option(None, "--mlp", help="gelu | relu2 | swiglu.", rich_help_panel="Model"),
    tie_embeddings: Optional[bool] = typer.Option(
        None, "--tie-embeddings/--untie-embeddings", help="Output layer shares the token embedding.", rich_help_panel="Model"
    ),
    vocab_multiple: Optional[int] = typer.Option(
        None, "--vocab-multiple", help="Pad the vocabulary to a multiple of this (64: faster on GPUs).  [default: 1]", rich_help_panel="Model"
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run saved in --out from its newest saved step."),
    resume_from: Optional[int] = typer.Option(None, "--resume-from", help="Continue the run in --out from this saved step (later ones are redone).", metavar="STEP"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh even if --out holds a run."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config (TOML) and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Train a GPT on a prepared data folder. Prints the checkpoint's path on stdout."""
    from gptkit.config import DEFAULT_PRESET, resolve_config, to_toml
    from gptkit.devices import resolve_device
    from gptkit.distributed import is_main_process
    from gptkit.monitor import PlainMonitor, RichMonitor
    from gptkit.train import resume_config, train as run_training

    train_overrides = {
        k: v
        for k, v in dict(
            data=str(data) if data else None, out=str(out) if out else None, device=device, dtype=dtype,
            max_iters=max_iters, eval_interval=eval_interval, eval_iters=eval_iters, log_interval=log_interval,
            seed=seed, batch_size=batch_size, grad_accum=grad_accum, learning_rate=learning_rate, min_lr=min_lr,
            warmup_iters=warmup_iters, lr_decay_iters=lr_decay_iters, weight_decay=weight_decay, beta1=beta1,
            beta2=beta2, grad_clip=grad_clip, compile=compile, keep_checkpoints=keep_checkpoints,
            on_bad_loss=on_bad_loss, loss_spike_factor=loss_spike_factor, max_bad_steps=max_bad_steps,
            tensorboard=tensorboard, optimizer=optimizer, lr_schedule=lr_schedule, sampler=sampler, parallel=parallel,
        ).items()
        if v is not None
    }
    model_overrides = {
        k: v
        for k, v in dict(
            n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, dropout=dropout, bias=bias,
            position=position, norm=norm, mlp=mlp, tie_embeddings=tie_embeddings, vocab_multiple=vocab_multiple,
        ).items()
        if v is not None
    }
    resume = resume or resume_from is not None
    if resume:
        if model_overrides or preset or config:
            raise UsageError("--resume continues a run with its saved config; model options, --preset and --config don't apply")
        model_config, train_config = resume_config(out or Path("out"), train_overrides, resume_from)
    else:
        if preset is None and config is None:
            preset = "shakespeare-char" if resolve_device(device or "auto").type == "cuda" else DEFAULT_PRESET
        # Values are checked by train(), together with the data and the run folder: all problems at once.
        model_config, train_config = resolve_config(preset, config, model_overrides, train_overrides, check=print_config)
    if print_config:
        print(to_toml(model_config, train_config), end="")
        return

    monitor = RichMonitor(err, title=f"gptkit train → {train_config.out}") if err.is_terminal else PlainMonitor()
    where = f"resuming {train_config.out}" if resume else f"preset {preset}" if preset else f"config {config}"
    main_process = is_main_process()  # under torchrun, rank 0 alone talks
    if main_process:
        _log(f"gptkit {__version__} train ({where}) | data {train_config.data} -> {train_config.out}")
    result = run_training(
        model_config, train_config, resume=resume, overwrite=overwrite, resume_from=resume_from, monitor=monitor
    )
    if not main_process:
        return
    ckpt = result.out / "ckpt.safetensors"
    _log(
        f"done: step {result.step}, val loss {result.val_loss:.4f} (best {result.best_val_loss:.4f}), "
        f"{result.ms_per_iter:.1f} ms/iter, {result.elapsed_s:.1f} s"
        if result.val_loss is not None and result.best_val_loss is not None
        else f"done: step {result.step}"
    )
    if as_json:
        _emit_json({"checkpoint": str(ckpt), **{k: v for k, v in vars(result).items() if k != "out"}, "out": str(result.out)})
    else:
        print(ckpt)


# ---------------------------------------------------------------------------------------------------
# eval


@app.command(
    "eval",
    epilog="Examples:\n\n"
    "  gptkit eval --ckpt out/ckpt.safetensors\n\n"
    "  gptkit eval --ckpt out/best.safetensors --split train --json | jq .perplexity",
)
def eval_cmd(
    ckpt: Path = typer.Option(Path("out/ckpt.safetensors"), "--ckpt", help="Checkpoint to evaluate."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Data folder.  [default: the one the model trained on]"),
    split: str = typer.Option("val", "--split", help="Which split: val or train."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Windows per forward pass."),
    max_batches: Optional[int] = typer.Option(None, "--max-batches", min=1, help="Stop after this many batches."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Loss, perplexity and bits per byte of a checkpoint over a whole data split."""
    from gptkit.checkpoint import peek_checkpoint
    from gptkit.evaluate import evaluate

    if data is None:  # the header says where the model trained; evaluate() verifies the weights
        saved = peek_checkpoint(ckpt).train_config.get("data")
        if not saved:
            raise UsageError("the checkpoint does not record its data folder", hint="pass --data DIR")
        data = Path(saved)
    result = evaluate(ckpt, data, split, device, batch_size, max_batches)
    if as_json:
        _emit_json(result)
    else:
        for key in (f"{split}_loss", "perplexity", "bits_per_byte", "tokens", "step"):
            value = result[key]
            print(f"{key}\t{value:.4f}" if isinstance(value, float) else f"{key}\t{value}")


# ---------------------------------------------------------------------------------------------------
# sample


@app.command(
    epilog="Examples:\n\n"
    "  gptkit sample --ckpt out/ckpt.safetensors\n\n"
    "  gptkit sample --prompt 'ROMEO:' --max-new-tokens 200 --temperature 0.7 --seed 1\n\n"
    "  echo 'JULIET:' | gptkit sample --num-samples 3 --json",
)
def sample(
    ckpt: Path = typer.Option(Path("out/ckpt.safetensors"), "--ckpt", help="Checkpoint to sample from."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Text to continue."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="Read the prompt from a file."),
    num_samples: int = typer.Option(1, "--num-samples", "-n", min=1, help="How many samples."),
    max_new_tokens: int = typer.Option(500, "--max-new-tokens", min=1, help="Tokens to generate per sample."),
    temperature: float = typer.Option(0.8, "--temperature", min=0.0, help="0 = greedy; <1 safer, >1 wilder."),
    top_k: int = typer.Option(200, "--top-k", min=0, help="Sample only among the k likeliest tokens (0: all)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Same seed, same text."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    echo: bool = typer.Option(True, "--echo/--no-echo", help="Print the prompt before its continuation."),
    stop_at_eot: bool = typer.Option(True, "--stop-at-eot/--no-stop-at-eot", help="End a sample at <|endoftext|>."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per sample: prompt, completion."),
) -> None:
    """Generate text from a checkpoint. Only the text goes to stdout.

    Without --prompt or --prompt-file, the prompt is read from stdin when it is a pipe, else it is a
    newline, as in nanoGPT.
    """
    from gptkit.generate import sample_texts

    if prompt is not None and prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        from gptkit.sources import read_text_file

        prompt = read_text_file(prompt_file)
    elif prompt is None and sys.stdin is not None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    for index, (prompt_text, pieces) in enumerate(
        sample_texts(ckpt, prompt, num_samples, max_new_tokens, temperature, top_k or None, seed, device, stop_at_eot)
    ):
        if as_json:
            _emit_json({"sample": index, "prompt": prompt_text, "completion": "".join(pieces)})
            continue
        if index > 0:
            sys.stdout.write("\n---\n")
        if echo:
            sys.stdout.write(prompt_text)
        for piece in pieces:  # stream as the tokens arrive
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------
# report


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


# ---------------------------------------------------------------------------------------------------
# entry point


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
