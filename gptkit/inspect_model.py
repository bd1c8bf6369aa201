"""`gptkit inspect`: what a model is made of and what it costs, from a checkpoint, a preset or a config.

    subject = resolve_subject(ckpt="out/ckpt.safetensors")         # or preset="gpt2-124m", config_file="my.toml"
    summary = summarize(subject, batch_size=12, block_size=1024, dtype="bfloat16")
    summary["parameters"]["by_component"]   # {"embeddings": ..., "attention": ..., "mlp": ..., "norms": ..., "output": ...}
    table = compare(summarize(a), summarize(b))

Nothing here needs the weights: the model is built on the meta device (shapes, no memory), and a
checkpoint's header (its config, step and losses) is read without its tensors. Every number is read
from the model's own modules, so a component added later is counted without a new formula:

    parameters      per component, by the name and type of the module that holds each tensor
                    (memory_estimate.component_of); a tied output layer is the token embedding, counted once
    FLOPs/token     training = GPT.flops_per_token() (6 per weight + 12 L C T for attention's scores, PaLM's
                    appendix B); forward = a third of it: 2 per weight + 4 L C T
    KV cache        2 (keys and values) x n_layer x n_kv_head x head size x bytes per element, per token
    memory          memory_estimate.estimate_training_memory: weights, gradients, optimizer state,
                    activations and the simulated peak of one training step

docs/inspect.md explains each number with its formula and shapes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gptkit.config import PRESETS, ModelConfig, TrainConfig, apply_settings, load_toml, resolve_config
from gptkit.errors import GptkitError, UsageError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Subject:
    """A model to inspect: its config, where it came from, and what its checkpoint says about it."""

    label: str  # what the user named: a checkpoint path, "preset NAME", a TOML file
    kind: str  # "checkpoint" | "preset" | "config"
    config: ModelConfig
    train: dict = field(default_factory=dict)  # the training settings it was (or would be) trained with
    checkpoint: Path | None = None
    step: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    vocab_source: str = "checkpoint"  # where vocab_size came from (a preset's comes from its data)


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's latest checkpoint (RUN/ckpt.safetensors)."""
    from gptkit.checkpoint_format import CKPT_NAME

    path = Path(path)
    if path.is_dir():
        if not (path / CKPT_NAME).is_file():
            raise GptkitError(f"{path} holds no {CKPT_NAME}", hint="pass a checkpoint file or the --out folder of `gptkit train`")
        return path / CKPT_NAME
    if not path.exists():
        raise GptkitError(f"checkpoint {path} does not exist", hint="pass a checkpoint file or a run folder")
    return path


def resolve_subject(
    ckpt: str | Path | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    vocab_size: int | None = None,
    data: str | Path | None = None,
) -> Subject:
    """The model named by a checkpoint (file or run folder), or by a preset and/or a config file.

    A preset or config has no data yet, so its vocabulary comes from `vocab_size`, else from the data
    folder (`data`, else the config's train.data) when it has a meta.json, else the config's default."""
    if ckpt is not None and (preset or config_file):
        raise UsageError("give --ckpt, or --preset / --config, not both")
    if ckpt is not None:
        from gptkit.checkpoint import peek_checkpoint

        path = checkpoint_path(ckpt)
        saved = peek_checkpoint(path)  # the header: config, step, losses; no tensors read
        return Subject(str(ckpt), "checkpoint", saved.model_config, saved.train_config, path, saved.step,
                       saved.train_loss, saved.val_loss)
    if not preset and not config_file:
        raise UsageError("nothing to inspect", hint="give --ckpt FILE|RUN_FOLDER, --preset NAME or --config FILE.toml")
    model, train = resolve_config(preset, config_file, check=False)
    label = " + ".join([f"preset {preset}"] * bool(preset) + [str(config_file)] * bool(config_file))
    if vocab_size is not None:
        source = "--vocab-size"
    elif config_file and "vocab_size" in load_toml(config_file).get("model", {}):
        source = str(config_file)
    else:
        vocab_size, source = _vocab_from_data(data or train.data, model.vocab_size)
    if vocab_size is not None:
        model = apply_settings(model, {"vocab_size": vocab_size}, "--vocab-size")
    problems = model.validate()
    if problems:
        raise UsageError("invalid configuration: " + "; ".join(problems))
    return Subject(label, "preset" if preset and not config_file else "config", model, asdict(train), vocab_source=source)


def _vocab_from_data(data: str | Path, default: int) -> tuple[int | None, str]:
    meta = Path(data) / "meta.json"
    if meta.is_file():
        try:
            return int(json.loads(meta.read_text(encoding="utf-8"))["vocab_size"]), f"{meta}"
        except (ValueError, KeyError, TypeError):
            pass
    return None, f"the config's default ({default:,}; pass --vocab-size or --data for your tokenizer's)"


def subject_from(text: str, vocab_size: int | None = None, data: str | Path | None = None) -> Subject:
    """`--compare`'s arguments: a TOML file, a checkpoint or run folder, or a preset name."""
    path = Path(text)
    if text.endswith(".toml"):
        return resolve_subject(config_file=path, vocab_size=vocab_size, data=data)
    if path.exists():
        return resolve_subject(ckpt=path)
    if text in PRESETS:
        return resolve_subject(preset=text, vocab_size=vocab_size, data=data)
    raise UsageError(
        f"{text!r} is neither a checkpoint, a run folder, a .toml config nor a preset",
        hint=f"presets: {', '.join(PRESETS)}",
    )


def shapes_model(config: ModelConfig):
    """The GPT of `config` on the meta device: every module and tensor shape, no memory, no init."""
    from gptkit.model import GPT, shapes_only

    with shapes_only():
        return GPT(config)


def parameter_counts(model) -> dict:
    """Parameters per component (memory_estimate.MODEL_PARTS), read from the module holding each tensor,
    and each tensor's row: name, shape, component. A tied output layer is the token embedding."""
    from gptkit.memory_estimate import MODEL_PARTS, component_of

    owners = dict(model.named_modules())
    by_component = {name: 0 for name in MODEL_PARTS}
    tensors = []
    for name, p in model.named_parameters():  # a shared tensor (tied weights) is listed once
        module_path = name.rpartition(".")[0]
        component = component_of(module_path, owners[module_path])
        by_component[component] += p.numel()
        tensors.append({"name": name, "shape": list(p.shape), "parameters": p.numel(), "component": component})
    tied = model.lm_head is None
    return {"total": sum(by_component.values()), "by_component": by_component, "tied_embeddings": tied, "tensors": tensors}


def flops_per_token(model) -> dict:
    """Training FLOPs per token as GPT.flops_per_token counts them, the forward pass (a third: the
    backward pass costs twice the forward), and the forward's split into weight matmuls and attention."""
    training = model.flops_per_token()
    forward = training // 3
    matmul = 2 * model.num_params(include_position_embedding=False)  # a multiply and an add per weight
    return {
        "training": training, "forward": forward, "forward_matmul": matmul,
        "forward_attention": forward - matmul,  # q.k scores and the weighted sum of values, over block_size
        "context": model.config.block_size,
    }


def kv_cache_bytes(config: ModelConfig, dtype: str = "float32") -> dict:
    """The KV cache of generation: a key and a value vector per layer and key/value head, per token."""
    n_kv_head = getattr(config, "n_kv_head", None) or config.n_head  # grouped-query attention shares them
    head_size = config.n_embd // config.n_head
    per_token = 2 * config.n_layer * n_kv_head * head_size * DTYPE_BYTES[dtype]
    return {"dtype": dtype, "n_kv_head": n_kv_head, "head_size": head_size, "bytes_per_token": per_token,
            "bytes_full_context": per_token * config.block_size}


def summarize(
    subject: Subject,
    batch_size: int | None = None,
    block_size: int | None = None,
    dtype: str = "float32",
    optimizer: str | None = None,
    memory: bool = True,
) -> dict:
    """Every number of `gptkit inspect` for `subject`, as a JSON-ready dict. The step's batch size and
    optimizer default to the subject's own training settings."""
    if dtype not in DTYPE_BYTES:
        raise UsageError(f"unknown dtype {dtype!r}", hint=f"use {', '.join(DTYPE_BYTES)}")
    model = shapes_model(subject.config)
    train = TrainConfig()
    batch_size = batch_size or subject.train.get("batch_size", train.batch_size)
    optimizer = optimizer or subject.train.get("optimizer", train.optimizer)
    summary = {
        "source": subject.label, "kind": subject.kind, "checkpoint": str(subject.checkpoint) if subject.checkpoint else None,
        "step": subject.step, "train_loss": subject.train_loss, "val_loss": subject.val_loss,
        "vocab_source": subject.vocab_source, "config": subject.config.to_dict(),
        "parameters": parameter_counts(model), "flops_per_token": flops_per_token(model),
        "kv_cache": kv_cache_bytes(subject.config, dtype), "memory": None,
    }
    if memory:
        from gptkit.memory_estimate import estimate_training_memory

        summary["memory"] = estimate_training_memory(subject.config, batch_size, block_size, dtype, optimizer).to_dict()
    return summary


COMPARED = (  # (label, path into a summary, unit)
    ("parameters", ("parameters", "total"), "count"),
    ("  embeddings", ("parameters", "by_component", "embeddings"), "count"),
    ("  attention", ("parameters", "by_component", "attention"), "count"),
    ("  mlp", ("parameters", "by_component", "mlp"), "count"),
    ("  norms", ("parameters", "by_component", "norms"), "count"),
    ("  output", ("parameters", "by_component", "output"), "count"),
    ("forward FLOPs/token", ("flops_per_token", "forward"), "count"),
    ("training FLOPs/token", ("flops_per_token", "training"), "count"),
    ("KV cache/token", ("kv_cache", "bytes_per_token"), "bytes"),
    ("train step peak", ("memory", "peak_bytes"), "bytes"),
    ("  activations", ("memory", "activation_bytes"), "bytes"),
    ("  optimizer state", ("memory", "optimizer_bytes"), "bytes"),
    ("step", ("step",), "count"),
    ("val loss", ("val_loss",), "count"),
)


def _at(summary: dict, path: tuple[str, ...]):
    for key in path:
        summary = summary.get(key) if isinstance(summary, dict) else None
    return summary


def compare(a: dict, b: dict) -> dict:
    """Two summaries side by side: the config fields that differ, then each number for both (None where
    unknown, e.g. the val loss of a preset) and b's ratio to a."""
    differences = {k: [v, b["config"].get(k)] for k, v in a["config"].items() if b["config"].get(k) != v}
    rows = []
    for label, path, unit in COMPARED:
        x, y = _at(a, path), _at(b, path)
        ratio = y / x if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x else None
        rows.append({"name": label.strip(), "label": label, "unit": unit, "a": x, "b": y, "ratio": ratio})
    return {"a": a["source"], "b": b["source"], "config_differences": differences, "rows": rows}
