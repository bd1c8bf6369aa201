"""The settings of `gptkit finetune`: FinetuneConfig, and the training defaults fine-tuning starts from.

    [finetune]                 # FinetuneConfig: what is trained
    lora_rank = 8              # 0: full fine-tuning (every weight, minus the frozen ones)
    lora_targets = "q,k,v,o,mlp"
    [train]                    # TrainConfig, over the fine-tuning defaults below
    learning_rate = 1e-3

Layers, as for `train` (config.py): the TrainConfig defaults < the fine-tuning defaults (FULL_DEFAULTS
or LORA_DEFAULTS, by lora_rank) < --config FILE.toml < command-line options. A fine-tuning run starts
from weights that already work, so it takes smaller, fewer steps than pretraining: a learning rate of
1e-4 for full fine-tuning (big steps would undo what pretraining learned), 1e-3 for LoRA (its B starts
at zero and its updates are scaled by alpha / rank), a short warmup, 500 iterations.

Torch-free, like config.py: `gptkit finetune --help` imports neither.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from gptkit.config import TrainConfig, apply_settings, load_toml, option
from gptkit.errors import UsageError

FINETUNE = "Fine-tuning"
LORA_TARGET_HELP = "q, k, v (attention's fused qkv, per part), o (attention output), mlp_fc, mlp_proj, mlp (both)"


@dataclass
class FinetuneConfig:
    """What a fine-tuning run trains. Saved in OUT/finetune.toml, and the LoRA part in the adapter."""

    lora_rank: int = option(0, "LoRA rank: train low-rank updates of the target layers only (0: full fine-tuning).", panel=FINETUNE)
    lora_alpha: float = option(16.0, "LoRA alpha: the low-rank update is scaled by alpha / rank.", panel=FINETUNE)
    lora_dropout: float = option(0.0, "Dropout on the input of the LoRA update.", panel=FINETUNE)
    lora_targets: str = option("q,k,v,o,mlp", f"Layers LoRA adapts, comma-separated: {LORA_TARGET_HELP}.", panel=FINETUNE)
    freeze_embeddings: bool = option(
        False, "Full fine-tuning: keep the token (and position) embeddings fixed.",
        flags=("--freeze-embeddings/--no-freeze-embeddings",), panel=FINETUNE,
    )
    freeze_blocks: int = option(0, "Full fine-tuning: keep the first N transformer blocks fixed.", panel=FINETUNE)

    @property
    def lora(self) -> bool:
        return self.lora_rank > 0

    def validate(self) -> list[str]:
        problems = []
        if self.lora_rank < 0:
            problems.append(f"finetune.lora_rank must not be negative (got {self.lora_rank})")
        if not self.lora_alpha > 0:
            problems.append(f"finetune.lora_alpha must be positive (got {self.lora_alpha})")
        if not 0.0 <= self.lora_dropout < 1.0:
            problems.append(f"finetune.lora_dropout must be in [0, 1) (got {self.lora_dropout})")
        if self.freeze_blocks < 0:
            problems.append(f"finetune.freeze_blocks must not be negative (got {self.freeze_blocks})")
        if self.lora and (self.freeze_embeddings or self.freeze_blocks):
            problems.append("freeze_embeddings and freeze_blocks are for full fine-tuning: LoRA freezes every base weight")
        return problems

    def lora_settings(self) -> dict:
        """What an adapter records to be applied again (lora.apply_adapter)."""
        from gptkit.lora import parse_targets  # torch: only when a run starts

        return {"rank": self.lora_rank, "alpha": self.lora_alpha, "dropout": self.lora_dropout, "targets": ",".join(parse_targets(self.lora_targets))}


_COMMON = dict(warmup_iters=20, max_iters=500, lr_decay_iters=0, eval_interval=100, eval_iters=20, log_interval=10, out="out/finetune")
FULL_DEFAULTS = {**_COMMON, "learning_rate": 1e-4, "min_lr": 1e-5}
LORA_DEFAULTS = {**_COMMON, "learning_rate": 1e-3, "min_lr": 1e-4, "weight_decay": 0.0}  # no decay pulling B A to 0

CLASSES = {"finetune": FinetuneConfig, "train": TrainConfig}  # the tables of a finetune TOML file
# What `gptkit finetune --help` shows as the training options' defaults (there are no presets here).
_FULL, _LORA = TrainConfig(**FULL_DEFAULTS), TrainConfig(**LORA_DEFAULTS)
SHOWN_DEFAULTS = {
    f.name: f"{getattr(_FULL, f.name)} (full) / {getattr(_LORA, f.name)} (LoRA)"
    if getattr(_FULL, f.name) != getattr(_LORA, f.name) else str(getattr(_FULL, f.name))
    for f in fields(TrainConfig)
}


def load_finetune_toml(path: str | Path) -> dict:
    """A finetune config (or a run's finetune.toml record): [finetune] and [train] tables, and [base]."""
    return load_toml(path, ("finetune", "train", "base"), classes=CLASSES)


def resolve_finetune_config(
    config_file: str | Path | None, finetune_overrides: dict, train_overrides: dict
) -> tuple[FinetuneConfig, TrainConfig]:
    """The layers of the module docstring. Values are checked later, with the data (or by check_configs)."""
    data = load_finetune_toml(config_file) if config_file else {}
    ft = apply_settings(FinetuneConfig(), data.get("finetune", {}), str(config_file))
    ft = apply_settings(ft, finetune_overrides, "options")
    train = apply_settings(TrainConfig(), LORA_DEFAULTS if ft.lora else FULL_DEFAULTS, "fine-tuning defaults")
    train = apply_settings(train, data.get("train", {}), str(config_file))
    return ft, apply_settings(train, train_overrides, "options")


def check_configs(ft: FinetuneConfig, train: TrainConfig) -> None:
    problems = ft.validate() + train.validate()
    if problems:
        raise UsageError("invalid configuration: " + "; ".join(problems), hint="fix these options (see `gptkit finetune --help`)")


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def finetune_toml(ft: FinetuneConfig, train: TrainConfig, base: dict | None = None) -> str:
    """The resolved settings as TOML ([finetune], [train], and [base]: the checkpoint and its checksum)."""
    tables = [("finetune", asdict(ft)), ("train", asdict(train))] + ([("base", base)] if base else [])
    lines = []
    for table, values in tables:
        lines += [f"[{table}]"] + [f"{k} = {_value(v)}" for k, v in values.items()] + [""]
    return "\n".join(lines)


def finetune_fields() -> list[str]:
    return [f.name for f in fields(FinetuneConfig)]
