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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from gptkit.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def option(
    default,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    flags: tuple[str, ...] = (),
    panel: str | None = None,
    resumable: bool = False,
    derived: bool = False,
):
    """A config field described once, for TOML, the command line (gptkit/options.py) and validate().

    help: the sentence `train --help` shows. choices: the allowed values, checked by validate() and listed
    in the help. flags: the option's declarations when not the plain `--field-name` (aliases, a boolean
    pair such as "--bias/--no-bias"). panel: the help section. resumable: `train --resume` may change it
    (resume.py); every other setting given on resume must equal the saved run's. derived: set by `train`
    itself (from the data), so it has no option."""
    meta = dict(help=help, choices=choices, flags=flags, panel=panel, resumable=resumable, derived=derived)
    return field(default=default, metadata=meta)


def choices_of(cls, name: str) -> tuple[str, ...] | None:
    """The allowed values of config field `name` of dataclass `cls` (None: any value of its type)."""
    return cls.__dataclass_fields__[name].metadata.get("choices")


def _either(choices: tuple[str, ...]) -> str:
    return f"{', '.join(choices[:-1])} or {choices[-1]}"


MODEL = "Model"


@dataclass
class ModelConfig:
    """Everything needed to build the network. Saved in every checkpoint's metadata."""

    vocab_size: int = option(50257, "Token ids the model knows.", derived=True, panel=MODEL)  # from the data's tokenizer
    vocab_multiple: int = option(1, "Pad the embedding rows to a multiple of this (64: faster matmuls on GPUs).", panel=MODEL)
    block_size: int = option(1024, "Context length in tokens: the longest sequence the model sees.", panel=MODEL)
    n_layer: int = option(12, "Transformer blocks.", panel=MODEL)
    n_head: int = option(12, "Attention heads per block.", panel=MODEL)
    n_embd: int = option(768, "Embedding width.", panel=MODEL)
    dropout: float = option(0.0, "Dropout probability.", panel=MODEL)
    bias: bool = option(
        True, "Biases in Linear and LayerNorm (GPT-2 has them; without is a little faster and as good).",
        flags=("--bias/--no-bias",), panel=MODEL,
    )
    # The swappable components (model.py's COMPONENTS tables and docs/components.md): GPT-2's are the defaults.
    position: str = option(
        "learned", "Position encoding: a learned table, rotary, ALiBi's distance bias, or none (order from the causal "
        "mask alone).", choices=("learned", "rope", "alibi", "none"), panel=MODEL,
    )
    norm: str = option("layernorm", "Normalization layer.", choices=("layernorm", "rmsnorm"), panel=MODEL)
    mlp: str = option("gelu", "Feed-forward block.", choices=("gelu", "relu2", "swiglu"), panel=MODEL)
    block: str = option(
        "sequential", "Transformer block: attention then MLP (GPT-2), or both from one norm, side by side (GPT-J, PaLM).",
        choices=("sequential", "parallel"), panel=MODEL,
    )
    n_kv_head: int = option(
        0, "Key/value heads per block: 0 = n_head (multi-head), 1 = multi-query, between = grouped-query; "
        "must divide n_head.", panel=MODEL,
    )
    qk_norm: bool = option(
        False, "RMS-normalise each head's queries and keys before their dot product (QK-norm).",
        flags=("--qk-norm/--no-qk-norm",), panel=MODEL,
    )
    attention_window: int = option(
        0, "Sliding-window attention: each position sees at most this many latest positions, itself included "
        "(0: the whole context).", panel=MODEL,
    )
    tie_embeddings: bool = option(
        True, "Output layer = token embedding matrix (transposed).",
        flags=("--tie-embeddings/--untie-embeddings",), panel=MODEL,
    )
    # "tanh": the approximation GPT-2 was trained with; imported GPT-2 weights (hf_import.py) need it
    # for their logits to match the original's. "none" is the exact (erf) form, faster on CPU.
    gelu_approximate: str = option(
        "none", "The GELU of mlp = gelu: none (exact) or tanh (GPT-2's own).", choices=("none", "tanh"), derived=True,
        panel=MODEL,
    )  # derived: set by the import (from the weights' own config), not a command-line option

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token embedding and width of the logits: vocab_size rounded up to vocab_multiple."""
        return self.vocab_multiple * math.ceil(self.vocab_size / self.vocab_multiple)

    @property
    def kv_heads(self) -> int:
        """Key/value heads per block: n_kv_head, where 0 (the default) means one per query head."""
        return self.n_kv_head or self.n_head

    def validate(self) -> list[str]:
        """Return every problem with this config, as sentences (empty when valid)."""
        problems = []
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "vocab_multiple"):
            if getattr(self, name) < 1:
                problems.append(f"model.{name} must be at least 1 (got {getattr(self, name)})")
        if self.n_head >= 1 and self.n_embd % self.n_head != 0:
            problems.append(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if self.n_kv_head < 0:
            problems.append(f"model.n_kv_head must not be negative (got {self.n_kv_head}; 0 means n_head)")
        elif self.n_kv_head and self.n_head >= 1 and self.n_head % self.n_kv_head:
            problems.append(
                f"model.n_head ({self.n_head}) must be a multiple of model.n_kv_head ({self.n_kv_head}): "
                "each key/value head serves the same number of query heads"
            )
        if self.attention_window < 0:
            problems.append(f"model.attention_window must not be negative (got {self.attention_window}; 0 means off)")
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


# The swappable parts of the block and their names (model.py builds them).
COMPONENT_CHOICES = {name: choices_of(ModelConfig, name) for name in ("position", "norm", "mlp", "block")}

RUN, OPTIM, DATA, EVAL, ROBUST = "Run", "Optimization", "Data and parallelism", "Evaluation and logging", "Robustness and monitoring"


@dataclass
class TrainConfig:
    data: str = option("data/shakespeare", "Data folder from `gptkit prepare`.", flags=("--data", "-d"), panel=RUN, resumable=True)
    out: str = option("out", "Run folder: checkpoints, metrics.jsonl, config.toml.", flags=("--out", "-o"), panel=RUN, resumable=True)
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps.", panel=RUN, resumable=True)
    dtype: str = option("auto", "Autocast precision.", choices=("auto", "float32", "bfloat16", "float16"), panel=RUN, resumable=True)
    compile: str = option(
        "auto", "torch.compile the model: pays off on GPUs; on a CPU compiling takes about a minute and the steps are rarely faster (auto: on for CUDA, off elsewhere; TOML: auto, true or false).",
        choices=("auto", "true", "false"), flags=("--compile/--no-compile",), panel=RUN, resumable=True,
    )
    seed: int = option(1337, "Random seed (weights, batches, dropout).", panel=RUN)
    max_iters: int = option(5000, "Optimizer steps.", panel=OPTIM, resumable=True)
    batch_size: int = option(
        64, "Sequences per micro-batch (on resume with fewer processes, raise it or --grad-accum: same global batch).",
        panel=OPTIM, resumable=True,
    )
    grad_accum: int = option(1, "Micro-batches per optimizer step.", panel=OPTIM, resumable=True)
    learning_rate: float = option(1e-3, "Peak learning rate.", flags=("--learning-rate", "--lr"), panel=OPTIM)
    min_lr: float = option(1e-4, "Learning rate at the end of the decay (every schedule but constant).", panel=OPTIM)
    warmup_iters: int = option(
        100, "Linear warmup steps from 0 (a preset's warmup is at most a tenth of max_iters unless you set it).", panel=OPTIM
    )
    lr_decay_iters: int = option(
        0, "Step at which the decay reaches min_lr (0: max_iters; with a preset it is max_iters unless you set it).", panel=OPTIM
    )
    weight_decay: float = option(0.1, "AdamW weight decay, on tensors of 2+ dimensions (matrices, embeddings).", panel=OPTIM)
    beta1: float = option(0.9, "AdamW beta1.", panel=OPTIM)
    beta2: float = option(0.99, "AdamW beta2.", panel=OPTIM)
    grad_clip: float = option(1.0, "Clip the global gradient norm to this (0: off).", panel=OPTIM)
    optimizer: str = option(
        "adamw", "muon: Muon for hidden matrices, AdamW for the rest (optim.py).", choices=("adamw", "muon"), panel=OPTIM
    )
    muon_lr: float = option(0.02, "Muon's peak learning rate (scaled by the schedule like learning_rate).", panel=OPTIM)
    muon_momentum: float = option(0.95, "Muon's momentum.", panel=OPTIM)
    lr_schedule: str = option(
        "cosine", "Learning-rate schedule (wsd: warmup-stable-decay; schedule.py).",
        choices=("cosine", "linear", "constant", "wsd"), panel=OPTIM,
    )
    cooldown_frac: float = option(0.2, "wsd: share of the decay length spent decaying to min_lr.", panel=OPTIM)
    sampler: str = option(
        "random", "Training windows: anywhere at random, epochs of shuffled windows, or epochs of windows that start "
        "at documents (loader.py).", choices=("random", "epoch", "documents"), panel=DATA,
    )
    parallel: str = option(
        "ddp", "Under torchrun: replicate the model (ddp) or shard it (fsdp); distributed.py.",
        choices=("ddp", "fsdp"), panel=DATA, resumable=True,
    )
    eval_interval: int = option(250, "Steps between evaluations (and checkpoints).", panel=EVAL, resumable=True)
    eval_iters: int = option(20, "Batches per split at each evaluation.", panel=EVAL, resumable=True)
    log_interval: int = option(10, "Steps between progress lines and metrics.jsonl records.", panel=EVAL, resumable=True)
    tensorboard: bool = option(
        False, "Also write TensorBoard logs to OUT/tensorboard (pip install 'gptkit[tensorboard]').",
        flags=("--tensorboard/--no-tensorboard",), panel=ROBUST, resumable=True,
    )
    keep_checkpoints: int = option(3, "Saved steps kept in OUT/checkpoints (best.safetensors is kept besides).", panel=ROBUST, resumable=True)
    on_bad_loss: str = option(
        "skip", "A NaN/inf or spiking loss: skip that update, or stop the run.", choices=("skip", "stop"),
        panel=ROBUST, resumable=True,
    )
    loss_spike_factor: float = option(3.0, "A loss above this times the recent mean is a spike (0: off).", panel=ROBUST, resumable=True)
    max_bad_steps: int = option(10, "Stop anyway after this many bad steps in a row.", panel=ROBUST, resumable=True)

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
        for f in fields(self):
            allowed = f.metadata.get("choices")
            if allowed and getattr(self, f.name) not in allowed:
                problems.append(f"train.{f.name} must be {_either(allowed)} (got {getattr(self, f.name)!r})")
        if not 0.0 < self.cooldown_frac <= 1.0:
            problems.append(f"train.cooldown_frac must be in (0, 1] (got {self.cooldown_frac})")
        if not self.muon_lr > 0:
            problems.append(f"train.muon_lr must be positive (got {self.muon_lr})")
        if not 0.0 <= self.muon_momentum < 1.0:
            problems.append(f"train.muon_momentum must be in [0, 1) (got {self.muon_momentum})")
        if 0 < self.loss_spike_factor <= 1:
            problems.append(f"train.loss_spike_factor must be above 1, or 0 to disable (got {self.loss_spike_factor})")
        return problems


@dataclass
class Preset:
    description: str
    model: dict
    train: dict


# nanoGPT's CPU-example size on the Llama block (rotary, RMSNorm, SwiGLU, no biases), so the model exports
# as Llama; the two CPU presets train the same model.
_CPU_MODEL = dict(
    block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False, position="rope", norm="rmsnorm", mlp="swiglu"
)

PRESETS: dict[str, Preset] = {
    "shakespeare-char-cpu": Preset(
        "nanoGPT's CPU example (4 layers, 4 heads, 128 wide, context 64, batch 12, 2000 iterations, lr 1e-3) on "
        "the Llama block (rotary positions, RMSNorm, SwiGLU, no biases; it exports as Llama): 0.8M parameters, "
        "val loss ~1.66 where nanoGPT's GPT-2 block reaches ~1.89; add --position learned --norm layernorm "
        "--mlp gelu for that block",
        model=_CPU_MODEL,
        train=dict(
            max_iters=2000, batch_size=12, learning_rate=1e-3, min_lr=1e-4,
            warmup_iters=100, beta2=0.99, eval_interval=250, eval_iters=20, log_interval=10,
        ),
    ),
    "shakespeare-char-cpu-fast": Preset(
        "CPU speedrun: shakespeare-char-cpu's model (the Llama block; it exports as Llama) trained by Muon "
        "(AdamW at 6x the learning rate for embeddings and gains) for 500 iterations, evaluated once at the "
        "end: val loss ~1.85, below nanoGPT's 2000-iteration 1.89 in a quarter of the iterations "
        "(docs/performance.md)",
        model=_CPU_MODEL,
        train=dict(
            optimizer="muon", max_iters=500, batch_size=12, learning_rate=6e-3, min_lr=6e-4,
            warmup_iters=50, beta2=0.99, eval_interval=500, eval_iters=20, log_interval=50,
        ),
    ),
    "shakespeare-char": Preset(
        "nanoGPT's GPU Shakespeare config: a 10.7M-parameter char model (val loss ~1.47 on one GPU)",
        model=dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False),
        train=dict(
            max_iters=5000, batch_size=64, learning_rate=1e-3, min_lr=1e-4,
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
            max_iters=600_000, batch_size=12, grad_accum=40, learning_rate=6e-4,
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


TOML_TYPES_HINT = "in TOML numbers take no quotes (batch_size = 64), booleans are true or false, text is quoted (device = \"cpu\")"


def did_you_mean(names, known) -> list[str]:
    """'learning_rate (not learning_rat)' for each of `names` close to one of `known`, as the command line suggests."""
    from difflib import get_close_matches

    return [f"{match[0]} (not {name})" for name in names if (match := get_close_matches(name, sorted(known), n=1, cutoff=0.6))]


def setting_problems(obj, values: dict) -> tuple[list[str], list[str], dict]:
    """(unknown names, wrong types as sentences, the checked values) of `values` for dataclass `obj`."""
    names = _field_names(type(obj))
    unknown = sorted(set(values) - names)
    problems, checked = [], {}
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
    return unknown, problems, checked


def apply_settings(obj, values: dict, where: str):
    """Return a copy of dataclass `obj` with `values` set, checking names and types; one UsageError
    lists every unknown name and every wrong type."""
    unknown, problems, checked = setting_problems(obj, values)
    if unknown or problems:
        names = _field_names(type(obj))
        close = did_you_mean(unknown, names)
        hints = ["did you mean " + ", ".join(close)] if close else []
        hints += [f"known settings: {', '.join(sorted(names))}"] if unknown else [TOML_TYPES_HINT] if where.endswith(".toml") else []
        listed = [f"unknown setting(s) {', '.join(unknown)}"] if unknown else []
        raise UsageError(f"{where}: {'; '.join(listed + problems)}", hint="; ".join(hints) or None)
    return replace(obj, **checked)


def load_toml(path: str | Path, tables: tuple[str, ...] = ("model", "train"), classes: dict[str, type] | None = None) -> dict:
    """A config file's tables; any other table is refused (a typo would otherwise be ignored). With
    `classes` ({table: config dataclass}) the settings are checked too: every unknown table, unknown
    setting and wrong type of the file in one error, each unknown name with its closest known one."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist", hint="check the path; `gptkit train --print-config > my.toml` writes one to start from")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not valid TOML: {e}", hint="see https://toml.io: `[train]` on its own line, then `name = value` lines") from None
    known = " and ".join(f"[{t}]" for t in tables if t != "base")  # [base] is finetune.toml's record, not the user's
    extra = sorted(set(data) - set(tables))
    problems = [f"unknown table(s) {', '.join(extra)}"] if extra else []
    suggestions = did_you_mean([f"[{t}]" for t in extra], [f"[{t}]" for t in tables if t != "base"])
    for table, cls in (classes or {}).items():
        values = data.get(table, {})
        if not isinstance(values, dict):
            continue
        unknown, wrong, _ = setting_problems(cls(), values)
        if unknown:
            problems.append(f"unknown setting(s) {', '.join(unknown)} in [{table}]")
            home = {name: t for t, c in classes.items() if t != table for name in _field_names(c)}
            suggestions += did_you_mean([n for n in unknown if n not in home], _field_names(cls))
            suggestions += [f"{name} in [{home[name]}] (not [{table}])" for name in unknown if name in home]
        problems += wrong
    if problems:
        hints = (["did you mean " + ", ".join(suggestions)] if suggestions else []) + ([f"a config has {known} tables"] if extra else [])
        if any("should be a" in p for p in problems):
            hints.append(TOML_TYPES_HINT)
        raise UsageError(f"{path}: {'; '.join(problems)}", hint="; ".join(hints) or None)
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
    stated = set(train_overrides or {})  # the user's own settings, not the preset's
    if config_file:
        data = load_toml(config_file, classes={"model": ModelConfig, "train": TrainConfig})  # every problem at once
        model = apply_settings(model, data.get("model", {}), str(config_file))
        train = apply_settings(train, data.get("train", {}), str(config_file))
        stated |= set(data.get("train", {}))
    model = apply_settings(model, model_overrides or {}, "options")
    train = apply_settings(train, train_overrides or {}, "options")
    if preset:
        train = fit_schedule_to_run(train, stated)
    problems = config_problems(model, train)
    if check and problems:
        raise UsageError("invalid configuration: " + "; ".join(problems))
    return model, train


# A preset's schedule follows the run's length, so `--preset X --max-iters 150` still warms up and
# anneals: these settings come from max_iters unless the config file or the options set them.
RUN_LENGTH_SETTINGS = ("warmup_iters", "lr_decay_iters")


def fit_schedule_to_run(train: TrainConfig, stated: set[str]) -> TrainConfig:
    """The rule, for a preset's run: the decay ends at max_iters (lr_decay_iters = max_iters), and the
    warmup is the preset's but at most a tenth of the run (100 warmup steps of a 150-step run would leave
    no time to anneal). A value the user states is kept as it is."""
    changes = {}
    if "lr_decay_iters" not in stated:
        changes["lr_decay_iters"] = train.max_iters
    if "warmup_iters" not in stated:
        changes["warmup_iters"] = min(train.warmup_iters, train.max_iters // 10)
    return replace(train, **changes)


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
