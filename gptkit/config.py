"""Run configuration: plain dataclasses, filled in layers.

    defaults (the dataclasses below)  <  --preset NAME  <  --config FILE.toml  <  command-line options

A TOML file has two tables, mirroring the two dataclasses:

    [model]
    n_layer = 4
    [train]
    learning_rate = 1e-3

The resolved config is printed by `train` and saved as config.toml in the run folder and inside every
checkpoint, so any result can be traced back to exactly what produced it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from gptkit.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


COMPONENT_CHOICES = {
    "position": ("learned", "rope"),
    "norm": ("layernorm", "rmsnorm"),
    "mlp": ("gelu", "relu2", "swiglu"),
}


@dataclass
class ModelConfig:
    """Everything needed to build the network. Saved in every checkpoint's metadata."""

    vocab_size: int = 50257  # set from the data's tokenizer by `train`
    vocab_multiple: int = 1  # pad the embedding rows to a multiple of this (64: faster matmuls on GPUs)
    block_size: int = 1024  # context length: the longest sequence the model sees
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # GPT-2 has biases in Linear and LayerNorm; False is a little faster and as good
    position: str = "learned"  # learned | rope
    norm: str = "layernorm"  # layernorm | rmsnorm
    mlp: str = "gelu"  # gelu | relu2 | swiglu
    tie_embeddings: bool = True  # output layer = token embedding matrix (transposed)
    # mlp = gelu: "none" is the exact (erf) GELU; "tanh" the approximation GPT-2 was trained with, which
    # imported GPT-2 weights (hf_import.py) need for their logits to match the original's
    gelu_approximate: str = "none"

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token embedding and width of the logits: vocab_size rounded up to vocab_multiple."""
        return self.vocab_multiple * math.ceil(self.vocab_size / self.vocab_multiple)

    def validate(self) -> list[str]:
        """Return every problem with this config, as sentences (empty when valid)."""
        problems = []
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "vocab_multiple"):
            if getattr(self, name) < 1:
                problems.append(f"model.{name} must be at least 1 (got {getattr(self, name)})")
        if self.n_head >= 1 and self.n_embd % self.n_head != 0:
            problems.append(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"model.dropout must be in [0, 1) (got {self.dropout})")
        for name, choices in COMPONENT_CHOICES.items():
            if getattr(self, name) not in choices:
                problems.append(f"model.{name} must be one of {', '.join(choices)} (got {getattr(self, name)!r})")
        if self.gelu_approximate not in ("none", "tanh"):
            problems.append(f"model.gelu_approximate must be none or tanh (got {self.gelu_approximate!r})")
        if self.position == "rope" and self.n_head >= 1 and (self.n_embd // self.n_head) % 2:
            problems.append("model.position = rope needs an even head size (n_embd / n_head)")
        return problems

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    data: str = "data/shakespeare"  # folder written by `gptkit prepare`
    out: str = "out"  # run folder: checkpoints, metrics.jsonl, config.toml
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (autocast precision)
    compile: str = "auto"  # torch.compile the model: auto (on for CUDA, off elsewhere) | true | false
    seed: int = 1337
    # optimisation
    max_iters: int = 5000  # optimizer steps
    batch_size: int = 64  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    learning_rate: float = 1e-3
    min_lr: float = 1e-4  # cosine decay ends here
    warmup_iters: int = 100  # linear warmup from 0
    lr_decay_iters: int = 0  # cosine decay length; 0 means max_iters
    weight_decay: float = 0.1  # only on tensors with 2+ dimensions (matrices, embeddings)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # clip the global gradient norm; 0 disables
    optimizer: str = "adamw"  # adamw | muon (Muon for hidden matrices, AdamW for the rest; see optim.py)
    muon_lr: float = 0.02  # Muon's peak learning rate (scaled by the schedule like learning_rate)
    muon_momentum: float = 0.95
    lr_schedule: str = "cosine"  # cosine | linear | constant | wsd (warmup-stable-decay); see schedule.py
    cooldown_frac: float = 0.2  # wsd: share of the decay length spent decaying to min_lr
    # data and parallelism
    sampler: str = "random"  # random (windows anywhere) | epoch (shuffled, no repeats) | documents; see loader.py
    parallel: str = "ddp"  # under torchrun: ddp (replicate the model) | fsdp (shard it); see distributed.py
    # evaluation and logging
    eval_interval: int = 250  # steps between evaluations (and checkpoints)
    eval_iters: int = 20  # batches per split at each evaluation
    log_interval: int = 10  # steps between progress lines / metrics.jsonl records
    tensorboard: bool = False  # also write TensorBoard event files into <out>/tensorboard
    # robustness (docs/robustness.md)
    keep_checkpoints: int = 3  # saved steps kept in <out>/checkpoints (best.safetensors is kept besides)
    on_bad_loss: str = "skip"  # a NaN/inf or spiking loss: "skip" that update, or "stop" the run
    loss_spike_factor: float = 3.0  # a loss above this times the recent mean is a spike; 0 disables
    max_bad_steps: int = 10  # stop anyway after this many bad steps in a row

    def validate(self) -> list[str]:
        problems = []
        positive = (
            "max_iters", "batch_size", "grad_accum", "eval_interval", "eval_iters", "log_interval",
            "keep_checkpoints", "max_bad_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                problems.append(f"train.{name} must be at least 1 (got {getattr(self, name)})")
        for name in ("warmup_iters", "lr_decay_iters", "weight_decay", "grad_clip", "min_lr", "loss_spike_factor"):
            if getattr(self, name) < 0:
                problems.append(f"train.{name} must not be negative (got {getattr(self, name)})")
        if not self.learning_rate > 0:
            problems.append(f"train.learning_rate must be positive (got {self.learning_rate})")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"train.{name} must be in [0, 1) (got {getattr(self, name)})")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            problems.append(f"train.dtype must be auto, float32, bfloat16 or float16 (got {self.dtype!r})")
        choices = {
            "compile": ("auto", "true", "false"),
            "optimizer": ("adamw", "muon"),
            "lr_schedule": ("cosine", "linear", "constant", "wsd"),
            "sampler": ("random", "epoch", "documents"),
            "parallel": ("ddp", "fsdp"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                problems.append(f"train.{name} must be {' | '.join(allowed)} (got {getattr(self, name)!r})")
        if not 0.0 < self.cooldown_frac <= 1.0:
            problems.append(f"train.cooldown_frac must be in (0, 1] (got {self.cooldown_frac})")
        if not self.muon_lr > 0:
            problems.append(f"train.muon_lr must be positive (got {self.muon_lr})")
        if not 0.0 <= self.muon_momentum < 1.0:
            problems.append(f"train.muon_momentum must be in [0, 1) (got {self.muon_momentum})")
        if self.on_bad_loss not in ("skip", "stop"):
            problems.append(f"train.on_bad_loss must be skip or stop (got {self.on_bad_loss!r})")
        if 0 < self.loss_spike_factor <= 1:
            problems.append(f"train.loss_spike_factor must be above 1, or 0 to disable (got {self.loss_spike_factor})")
        return problems


@dataclass
class Preset:
    description: str
    model: dict
    train: dict


# nanoGPT's CPU-example size on gptkit's modern block; the two CPU presets train the same model.
_CPU_MODEL = dict(
    block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False, position="rope", norm="layernorm", mlp="swiglu"
)

PRESETS: dict[str, Preset] = {
    "shakespeare-char-cpu": Preset(
        "nanoGPT's CPU example (4 layers, 4 heads, 128 wide, context 64, batch 12, 2000 iterations, lr 1e-3) on "
        "gptkit's modern block (rotary positions, SwiGLU): 0.8M parameters, val loss ~1.65 where nanoGPT's "
        "GPT-2 block reaches ~1.89; add --position learned --mlp gelu for that block",
        model=_CPU_MODEL,
        train=dict(
            max_iters=2000, lr_decay_iters=2000, batch_size=12, learning_rate=1e-3, min_lr=1e-4,
            warmup_iters=100, beta2=0.99, eval_interval=250, eval_iters=20, log_interval=10,
        ),
    ),
    "shakespeare-char-cpu-fast": Preset(
        "CPU speedrun: shakespeare-char-cpu's model trained by Muon (AdamW at 6x the learning rate for "
        "embeddings and gains) for 500 iterations, evaluated once at the end: below nanoGPT's 2000-iteration "
        "val loss in a quarter of the iterations (docs/performance.md)",
        model=_CPU_MODEL,
        train=dict(
            optimizer="muon", max_iters=500, lr_decay_iters=500, batch_size=12, learning_rate=6e-3, min_lr=6e-4,
            warmup_iters=50, beta2=0.99, eval_interval=500, eval_iters=20, log_interval=50,
        ),
    ),
    "shakespeare-char": Preset(
        "nanoGPT's GPU Shakespeare config: a 10.7M-parameter char model (val loss ~1.47 on one GPU)",
        model=dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False),
        train=dict(
            max_iters=5000, lr_decay_iters=5000, batch_size=64, learning_rate=1e-3, min_lr=1e-4,
            warmup_iters=100, beta2=0.99, eval_interval=250, eval_iters=200, log_interval=10,
        ),
    ),
    "gpt2-124m": Preset(
        "GPT-2 small (124M) on GPT-2-tokenized data, as nanoGPT's GPT-2 reproduction (config/train_gpt2.py "
        "over train.py's defaults): 491,520 tokens per step on one GPU (12 x 1024 x grad_accum 40; under "
        "torchrun with N GPUs use --grad-accum 40/N), 600k steps, lr 6e-4 -> 6e-5, 2000 warmup steps, no biases, "
        "vocabulary padded to a multiple of 64 (50257 -> 50304)",
        # The char presets keep vocab_multiple = 1: padding 65 symbols to 128 would double their output layer.
        model=dict(block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=False, vocab_multiple=64),
        train=dict(
            max_iters=600_000, lr_decay_iters=600_000, batch_size=12, grad_accum=40, learning_rate=6e-4,
            min_lr=6e-5, warmup_iters=2000, weight_decay=0.1, beta1=0.9, beta2=0.95, grad_clip=1.0,
            eval_interval=1000, eval_iters=200, log_interval=10,
        ),
    ),
}
DEFAULT_PRESET = "shakespeare-char-cpu"


def _field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


# Settings that are "auto" | "true" | "false" strings but also take a plain boolean.
BOOL_OR_AUTO = {"compile"}


def apply_settings(obj, values: dict, where: str):
    """Return a copy of dataclass `obj` with `values` set, checking names and types; one UsageError
    lists every unknown name and every wrong type."""
    names = _field_names(type(obj))
    unknown = sorted(set(values) - names)
    problems = [f"unknown setting(s) {', '.join(unknown)}"] if unknown else []
    checked = {}
    for key, value in values.items():
        if key in unknown:
            continue
        default = getattr(obj, key)
        if key in BOOL_OR_AUTO and isinstance(value, bool):
            value = "true" if value else "false"  # `--compile`, `compile = true`, configs saved before "auto"
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            expected = "bool" if key in BOOL_OR_AUTO else type(default).__name__
            problems.append(f"{key} should be a {expected}, got {value!r}")
        checked[key] = value
    if problems:
        raise UsageError(
            f"{where}: {'; '.join(problems)}",
            hint=f"known settings: {', '.join(sorted(names))}" if unknown else None,
        )
    return replace(obj, **checked)


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not valid TOML: {e}") from None
    extra = sorted(set(data) - {"model", "train"})
    if extra:
        raise UsageError(f"{path}: unknown table(s) {', '.join(extra)}", hint="a config has [model] and [train] tables")
    return data


def resolve_config(
    preset: str | None = DEFAULT_PRESET,
    config_file: str | Path | None = None,
    model_overrides: dict | None = None,
    train_overrides: dict | None = None,
    check: bool = True,
) -> tuple[ModelConfig, TrainConfig]:
    """Build the run's configs from the layers; raises UsageError listing every invalid value.

    check=False leaves the values' checks to the caller: `train()` checks them together with the
    data and the run folder, so that one error lists every problem at once."""
    model, train = ModelConfig(), TrainConfig()
    if preset:
        if preset not in PRESETS:
            raise UsageError(f"unknown preset {preset!r}", hint=f"presets: {', '.join(PRESETS)}")
        model = apply_settings(model, PRESETS[preset].model, f"preset {preset}")
        train = apply_settings(train, PRESETS[preset].train, f"preset {preset}")
    if config_file:
        data = load_toml(config_file)
        model = apply_settings(model, data.get("model", {}), str(config_file))
        train = apply_settings(train, data.get("train", {}), str(config_file))
    model = apply_settings(model, model_overrides or {}, "options")
    train = apply_settings(train, train_overrides or {}, "options")
    problems = config_problems(model, train)
    if check and problems:
        raise UsageError("invalid configuration: " + "; ".join(problems))
    return model, train


def config_problems(model: ModelConfig, train: TrainConfig) -> list[str]:
    """Every invalid value of both configs (the vocabulary size comes from the data later)."""
    return [p for p in model.validate() if not p.startswith("model.vocab_size")] + train.validate()


def to_toml(model: ModelConfig, train: TrainConfig) -> str:
    """The resolved config as TOML (strings, numbers and booleans only, so a tiny writer suffices)."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(v)

    lines = []
    for table, obj in (("model", model), ("train", train)):
        lines.append(f"[{table}]")
        lines += [f"{k} = {value(v)}" for k, v in asdict(obj).items()]
        lines.append("")
    return "\n".join(lines)
