"""`gptkit finetune`: adapt a checkpoint to new data, fully or with LoRA; prints the merged checkpoint's path.

The options of FinetuneConfig (finetune_config.py) and TrainConfig (config.py) are generated from their
field metadata (gptkit/options.py), as for `train`; the model's shape is the checkpoint's. A resume
takes the run's saved settings (OUT/finetune.toml) and the command line on top, with the same rule as
`train --resume` (launch.py): resumable settings apply, others must equal the saved ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gptkit import __version__
from gptkit.cli.app import app
from gptkit.console import emit_json as _emit_json, err, log as _log
from gptkit.finetune_config import CLASSES, SHOWN_DEFAULTS
from gptkit.options import given_settings, with_config_options


@app.command(
    epilog="Examples:\n\n"
    "  gptkit finetune --ckpt out/ckpt.safetensors --data data/new --out out/ft                  # full fine-tuning\n\n"
    "  gptkit finetune --ckpt out/ckpt.safetensors --data data/new --out out/lora --lora-rank 8\n\n"
    "  gptkit finetune --out out/lora --resume --max-iters 1000\n\n"
    "  gptkit sample --ckpt out/ckpt.safetensors --adapter out/lora/adapter.safetensors\n\n"
    "Training options not shown with a fine-tuning default keep train's; `--print-config` shows them all.",
)
@with_config_options(classes=CLASSES, shown_defaults=SHOWN_DEFAULTS)
def finetune(
    ckpt: Optional[Path] = typer.Option(
        None, "--ckpt", "--init-from", help="The model to fine-tune: a checkpoint, a run folder, a Hugging Face GPT-2 folder "
        "or hub name (on --resume: the run's).",
    ),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML file with \\[finetune] and \\[train] tables."),
    resume: bool = typer.Option(False, "--resume", help="Continue the fine-tuning run saved in --out from its newest saved step."),
    resume_from: Optional[int] = typer.Option(None, "--resume-from", help="Continue the run in --out from this saved step.", metavar="STEP"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh even if --out holds a run."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config (TOML) and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    **settings,
) -> None:
    """Fine-tune a checkpoint on a prepared data folder (full, or LoRA with --lora-rank). Prints the merged checkpoint's path."""
    from gptkit.errors import UsageError
    from gptkit.finetune_config import finetune_toml, resolve_finetune_config

    tables = given_settings(settings, CLASSES)
    ft, cfg = resolve_finetune_config(config, tables["finetune"], tables["train"])
    resuming = resume or resume_from is not None
    if resuming:
        ft, cfg, saved_ckpt = _resumed(config, tables, ft, cfg)
        ckpt = ckpt or saved_ckpt
    if print_config:
        print(finetune_toml(ft, cfg), end="")
        return
    if ckpt is None:
        raise UsageError("--ckpt is missing: which checkpoint to fine-tune", hint="e.g. --ckpt out/ckpt.safetensors")

    from gptkit.distributed import is_main_process
    from gptkit.finetune import finetune as run_finetune
    from gptkit.launch import checkpoint_path
    from gptkit.monitor import PlainMonitor, RichMonitor

    monitor = RichMonitor(err, title=f"gptkit finetune → {cfg.out}") if err.is_terminal else PlainMonitor()
    main_process = is_main_process()
    if main_process:
        mode = f"LoRA rank {ft.lora_rank}" if ft.lora else "full"
        _log(f"gptkit {__version__} finetune ({mode}) | {ckpt} + data {cfg.data} -> {cfg.out}")
    result = run_finetune(ckpt, ft, cfg, resume=resuming, overwrite=overwrite, resume_from=resume_from, monitor=monitor)
    if not main_process:
        return
    merged = checkpoint_path(result.out)
    _log(f"done: step {result.step}" + (f", val loss {result.val_loss:.4f}" if result.val_loss is not None else ""))
    if as_json:
        extra = {"adapter": str(result.out / "adapter.safetensors")} if ft.lora else {}
        _emit_json({"checkpoint": str(merged), **extra, **{k: v for k, v in vars(result).items() if k != "out"}, "out": str(result.out)})
    else:
        print(merged)


def _resumed(config_file, tables: dict, ft, cfg):
    """The saved run's settings with the command line's on top (see the module docstring)."""
    from gptkit.errors import UsageError
    from gptkit.finetune import RECORD_NAME
    from gptkit.finetune_config import FinetuneConfig, load_finetune_toml
    from gptkit.config import TrainConfig, apply_settings
    from gptkit.launch import merge_with_saved

    record = Path(cfg.out) / RECORD_NAME
    if not record.is_file():
        raise UsageError(f"cannot resume: {cfg.out} holds no fine-tuning run ({RECORD_NAME} is missing)", hint="start it without --resume")
    saved = load_finetune_toml(record)
    saved_ft = apply_settings(FinetuneConfig(), saved.get("finetune", {}), str(record))
    saved_train = apply_settings(TrainConfig(), saved.get("train", {}), str(record))
    stated = {name: set(values) for name, values in tables.items()}
    if config_file:
        for table, values in load_finetune_toml(config_file).items():
            stated.setdefault(table, set()).update(values)
    ft, ft_conflicts = merge_with_saved(saved_ft, ft, stated.get("finetune", set()), "finetune")
    cfg, train_conflicts = merge_with_saved(saved_train, cfg, stated.get("train", set()), "train")
    if ft_conflicts or train_conflicts:
        raise UsageError(
            "--resume continues a run with its saved config; the command line differs from it in " + ", ".join(ft_conflicts + train_conflicts),
            hint="give the saved values or leave these settings out; to start a new run pass --overwrite or another --out",
        )
    return ft, cfg, Path(saved["base"]["ckpt"]) if saved.get("base", {}).get("ckpt") else None
