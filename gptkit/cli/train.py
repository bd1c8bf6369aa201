"""`gptkit train`: train a GPT on a prepared data folder; prints the checkpoint's path on stdout.

The command's own options (--preset, --config, --resume, ...) are written below; one option per
setting of ModelConfig and TrainConfig is added from their field metadata (gptkit/options.py), so the
help, the choices and the TOML names of the settings are written once, in config.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gptkit import __version__
from gptkit.cli.app import app
from gptkit.config import DEFAULT_PRESET, PRESETS
from gptkit.console import emit_json as _emit_json, err, log as _log
from gptkit.options import split_overrides, with_config_options

_DEFAULT_ON = {DEFAULT_PRESET: " (default on CPU)", "shakespeare-char": " (default on GPU)"}
PRESET_NAMES = ", ".join(name + _DEFAULT_ON.get(name, "") for name in PRESETS)


@app.command(
    epilog="Examples:\n\n"
    "  gptkit train                # preset shakespeare-char-cpu, data/shakespeare\n\n"
    "  gptkit train --device cuda --preset shakespeare-char\n\n"
    "  gptkit train --max-iters 200 --eval-interval 50 --out out/quick\n\n"
    "  gptkit train --out out/quick --resume --max-iters 400\n\n"
    "  gptkit train --preset shakespeare-char-cpu --out out/job --resume-auto   # re-run after a crash: it continues\n\n"
    "  torchrun --standalone --nproc-per-node 4 -m gptkit train --preset gpt2-124m --data data/owt --grad-accum 10",
)
@with_config_options
def train(
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help=f"Named config: {PRESET_NAMES}."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML file with \\[model] and \\[train] tables."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run saved in --out from its newest saved step (the command line that "
        "started it may be given again: settings that must not change are checked against the saved run).",
    ),
    resume_auto: bool = typer.Option(
        False, "--resume-auto", help="Resume when --out holds a saved step, else start the run: the same command "
        "for the first start and every restart (job schedulers, torchrun --max-restarts).",
    ),
    resume_from: Optional[int] = typer.Option(None, "--resume-from", help="Continue the run in --out from this saved step (later ones are redone).", metavar="STEP"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh even if --out holds a run."),
    init_from: Optional[str] = typer.Option(
        None, "--init-from", metavar="PATH",
        help="Start from these weights (and their model config): a gptkit checkpoint or run folder, a Hugging Face "
        "GPT-2 or Llama folder (a `gptkit export --format hf` folder too), or gpt2 | gpt2-medium | gpt2-large | gpt2-xl (downloaded once; gptkit[hf]). With --max-iters 0 "
        "it converts only: --out gets the imported model as ckpt.safetensors.",
    ),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config (TOML) and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    **settings,
) -> None:
    """Train a GPT on a prepared data folder. Prints the checkpoint's path on stdout."""
    from gptkit.config import to_toml
    from gptkit.distributed import is_main_process
    from gptkit.errors import UsageError
    from gptkit.launch import checkpoint_path, plan_launch
    from gptkit.monitor import PlainMonitor, RichMonitor
    from gptkit.train import train as run_training

    if resume and resume_auto:
        raise UsageError("--resume and --resume-auto contradict each other", hint="pass one of them")
    model_overrides, train_overrides = split_overrides(settings)
    if init_from is not None and train_overrides.get("max_iters") == 0:
        _convert_only(init_from, Path(train_overrides.get("out") or "out"), as_json)
        return
    launch = plan_launch(
        preset, config, model_overrides, train_overrides,
        resume="auto" if resume_auto else "yes" if resume else "no", resume_from=resume_from,
        overwrite=overwrite, check=print_config,
    )
    if print_config:
        print(to_toml(launch.model, launch.train), end="")
        return

    cfg = launch.train
    monitor = RichMonitor(err, title=f"gptkit train → {cfg.out}") if err.is_terminal else PlainMonitor()
    main_process = is_main_process()  # under torchrun, rank 0 alone talks
    if main_process:
        _log(f"gptkit {__version__} train ({launch.where}) | data {cfg.data} -> {cfg.out}")
    result = run_training(
        launch.model, cfg, resume=launch.resume, overwrite=launch.overwrite, resume_from=launch.resume_from, monitor=monitor,
        init_from=init_from,
    )
    if not main_process:
        return
    ckpt = checkpoint_path(result.out)
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


def _convert_only(init_from: str, out: Path, as_json: bool) -> None:
    """`--init-from REF --max-iters 0`: the imported weights as OUT/ckpt.safetensors, no training."""
    from gptkit.hf_import import convert
    from gptkit.run_folder import lock_run_folder

    with lock_run_folder(out):  # one writer, as for a run
        ckpt = convert(init_from, out)
    _log(f"converted {init_from} -> {ckpt} (no training: --max-iters 0)")
    if as_json:
        _emit_json({"checkpoint": str(ckpt), "step": 0, "init_from": init_from})
    else:
        print(ckpt)
