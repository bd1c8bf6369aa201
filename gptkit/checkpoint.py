"""Checkpoints: safetensors files that carry everything needed to use the model alone.

    ckpt.safetensors      weights + string metadata:
                              format, format_version, gptkit_version,
                              model_config (JSON), tokenizer (JSON spec), train_config (JSON),
                              step, train_loss, val_loss, checksum (sha256 of the weights),
                              kind ("model" | "adapter"), base_checksum (adapters only)
    *.resume.safetensors  what `train --resume` needs on top: optimizer moments, RNG states, the
                          batch sampler's position, the best val loss so far (tensors + JSON metadata,
                          a checksum over both, and the checksum of the checkpoint it belongs to)

safetensors, not pickle: opening a checkpoint from a stranger cannot run code. Every write is atomic
(see fileio.py), and loading verifies the checksum, so a damaged file is reported, never half-used;
run_folder.load_run_checkpoint then names the last good checkpoint next to the damaged one.

A checkpoint's `kind` is "model" (a full model) or "adapter" (extra weights, e.g. LoRA's, that belong
to one base model: `base_checksum` is that model's checksum). Files from before kinds are models.

This module is a leaf of the core: it knows one file at a time. What the header alone tells (without
torch) is checkpoint_format.py's; how a training run's folder keeps several of these files (the last
K steps, the best, which one to resume, the last good one) is run_folder.py's business.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gptkit import __version__
from gptkit.checkpoint_format import (  # noqa: F401  (DamagedFile and the constants are re-exported)
    ADAPTER,
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    MODEL,
    RESUME_FORMAT,
    DamagedFile,
    check_format,
    checkpoint_kind,
    read_checkpoint_header,
    read_header,
    unreadable,
)
from gptkit.errors import GptkitError
from gptkit.fileio import atomic_write_bytes
from gptkit.model import GPT, ModelConfig


def weights_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def state_checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sha256 over the tensors (as weights_checksum) and every metadata field but the checksum itself."""
    h = hashlib.sha256(weights_checksum(tensors).encode())
    for key in sorted(k for k in metadata if k != "checksum"):
        h.update(f"{key}={metadata[key]}\n".encode())
    return h.hexdigest()


def _serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)


def _open(path: Path, what: str, expected_format: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file of `expected_format`, turning every way it can be broken into a clear
    GptkitError. The header is checked first, so a file of the wrong format costs no weight reading."""
    from safetensors import SafetensorError, safe_open

    header = read_header(path, what)
    check_format(path, header.metadata, expected_format)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, ValueError, OSError, RuntimeError) as e:
        raise unreadable(path, e) from None
    return tensors, header.metadata


# ---------------------------------------------------------------------------------------------------
# The model checkpoint


@dataclass
class Checkpoint:
    model_config: ModelConfig
    tokenizer_spec: dict
    state_dict: dict[str, torch.Tensor]
    step: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    train_config: dict = field(default_factory=dict)
    gptkit_version: str = __version__
    kind: str = MODEL  # "model": the weights are a whole GPT; "adapter": extra weights on top of one
    base_checksum: str | None = None  # an adapter's base model: that checkpoint's checksum
    checksum: str | None = None  # "sha256:..." of these weights, as stored in the file

    def build_model(self, device: torch.device | str = "cpu") -> GPT:
        if self.kind != MODEL:
            raise GptkitError(
                f"this checkpoint is an {self.kind}, not a full model: it belongs to the base model {self.base_checksum}",
                hint="load the base model's checkpoint, then apply the adapter to it",
            )
        self.check_weights()
        # No fresh weights: the model is built on the meta device and takes the loaded tensors as its own
        # (so the model and this checkpoint share them), and memory never exceeds what the file holds.
        return GPT.from_state_dict(self.model_config, self.state_dict).to(device)

    def check_weights(self) -> None:
        """Refuse weights that are not those of this checkpoint's model config (check_weights_fit)."""
        if self.kind == MODEL:
            check_weights_fit(self.model_config, {k: tuple(v.shape) for k, v in self.state_dict.items()})

    def load_into(self, model: GPT) -> None:
        """Copy the weights into `model` (built from this checkpoint's config), or say why they don't fit."""
        check_weights_fit(model.config, {k: tuple(v.shape) for k, v in self.state_dict.items()})
        model.load_state_dict(self.state_dict, strict=True)

    def check_base(self, base: Checkpoint, source: str | Path = "the adapter") -> None:
        """Refuse to apply this adapter (from `source`) to a model other than the one it was trained on."""
        if self.kind != ADAPTER:
            raise GptkitError(f"{source} is a full model, not an adapter", hint="load it as a model on its own")
        if base.checksum != self.base_checksum:
            raise GptkitError(
                f"{source} was trained on the base model {self.base_checksum}, not on this one ({base.checksum})",
                hint="load the base model the adapter was trained on",
            )

    def tokenizer(self):
        from gptkit.tokenizers import tokenizer_from_spec

        return tokenizer_from_spec(self.tokenizer_spec)

    def check_data(self, meta: dict, data: str | Path, source: str | Path) -> None:
        """Refuse a data folder (its meta.json) tokenized differently from this checkpoint (`source`)."""
        if meta["tokenizer"] != self.tokenizer_spec:
            raise GptkitError(
                f"the data in {data} was tokenized differently ({describe_tokenizer(meta['tokenizer'])}) "
                f"from the model in {source} ({describe_tokenizer(self.tokenizer_spec)})",
                hint="use the data folder the model was trained on, or prepare your text with the model's tokenizer",
            )
        if meta["vocab_size"] != self.model_config.vocab_size:
            raise GptkitError(
                f"the data in {data} has a vocabulary of {meta['vocab_size']:,} tokens but the model in {source} "
                f"has {self.model_config.vocab_size:,}",
                hint="the data folder's meta.json does not match its tokenizer; prepare the data again",
            )


ROPE_TABLES_ALLOWANCE = 256 * 2**20  # rotary tables up to this size are fine whatever the weights' size


def check_weights_fit(config: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse weights (their names and shapes, e.g. from a file's header) that are not those of `config`.

    A checkpoint's metadata decides what gets built, so a stranger's file could claim 20,000 layers
    over a few megabytes of weights; checked against the tensors it really holds, before anything is
    allocated, such a file costs nothing. Names the first tensor that differs."""
    fix = "the model config saved with the weights is not theirs; use a checkpoint written by `gptkit train`"
    # The vocabulary-sized matrices first: their rows are vocab_size padded to vocab_multiple, which a
    # bare shape mismatch would not say.
    for name in ("token_embedding.weight", "lm_head.weight"):
        saved = shapes.get(name)
        if saved is not None and len(saved) == 2 and saved[0] != config.padded_vocab_size:
            raise GptkitError(
                f"checkpoint weights do not fit its model config: {name} has {saved[0]:,} rows, but "
                f"vocab_size {config.vocab_size:,} padded to a multiple of vocab_multiple {config.vocab_multiple} "
                f"needs {config.padded_vocab_size:,}",
                hint=fix,
            )
    outside, block = GPT.expected_shapes(config)
    summary = f"n_layer {config.n_layer}, n_embd {config.n_embd}, n_head {config.n_head}" + (
        f", n_kv_head {config.n_kv_head}" if config.n_kv_head else ""  # it sizes attn.qkv
    )

    def check(name: str, shape: tuple[int, ...]) -> None:
        if name not in shapes:
            raise GptkitError(f"checkpoint weights do not fit its model config ({summary}): the tensor {name} is missing", hint=fix)
        if shapes[name] != shape:
            raise GptkitError(
                f"checkpoint weights do not fit its model config ({summary}): {name} is {_shape(shapes[name])} in the "
                f"file, but the config needs {_shape(shape)}",
                hint=fix,
            )

    for name, shape in outside.items():
        check(name, shape)
    for i in range(config.n_layer):  # stops at the first block the file lacks, however many the config claims
        for name, shape in block.items():
            check(f"blocks.{i}.{name}", shape)
    # Rotary's cos/sin tables are not saved, so no tensor bounds block_size: cap what building them costs.
    if config.position == "rope":
        table_bytes = 2 * 4 * config.block_size * (config.n_embd // config.n_head)
        weight_bytes = 4 * sum(math.prod(shape) for shape in shapes.values())
        if table_bytes > max(weight_bytes, ROPE_TABLES_ALLOWANCE):
            raise GptkitError(
                f"the model config's context (block_size {config.block_size:,}) needs {table_bytes / 2**20:,.0f} MB of rotary "
                f"tables, more than its weights ({weight_bytes / 2**20:,.1f} MB) justify",
                hint=fix,
            )
    expected = len(outside) + config.n_layer * len(block)  # all present, so the file holds exactly these...
    if len(shapes) != expected:  # ...or some more
        names = set(outside) | {f"blocks.{i}.{name}" for i in range(config.n_layer) for name in block}
        extra = sorted(set(shapes) - names)
        raise GptkitError(
            f"checkpoint weights do not fit its model config ({summary}): the file holds the tensor {extra[0]}, "
            f"which such a model does not have" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""),
            hint=fix,
        )


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def describe_tokenizer(spec) -> str:
    """'char, 65 characters' or 'tiktoken, gpt2': enough to see how two tokenizers differ."""
    if not isinstance(spec, dict):
        return "unknown"
    detail = spec.get("encoding") or (f"{len(spec['chars'])} characters" if isinstance(spec.get("chars"), str) else None)
    return f"{spec.get('kind', '?')}, {detail}" if detail else str(spec.get("kind", "?"))


def save_checkpoint(
    path: str | Path,
    model: GPT,
    tokenizer_spec: dict,
    step: int,
    train_loss: float | None = None,
    val_loss: float | None = None,
    train_config: dict | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> str:
    """Write the checkpoint atomically; returns its checksum ("sha256:..."). The weights are
    `model`'s, or `state_dict` when given (the full weights gathered from a sharded model)."""
    tensors = dict(model.state_dict() if state_dict is None else state_dict)
    return _write(path, tensors, model.config, tokenizer_spec, step, train_loss, val_loss, train_config, MODEL)


def save_adapter(
    path: str | Path,
    weights: dict[str, torch.Tensor],
    base: Checkpoint,
    step: int,
    train_loss: float | None = None,
    val_loss: float | None = None,
    train_config: dict | None = None,
) -> str:
    """Write an adapter's own `weights` (e.g. LoRA's low-rank matrices) as a checkpoint of kind
    "adapter" that belongs to `base` (a full model's checkpoint, loaded or peeked from its file): it
    records the base's model config, tokenizer and checksum. Returns the adapter's checksum."""
    if base.kind != MODEL or base.checksum is None:
        raise ValueError("an adapter's base must be a full model's checkpoint, read from its file")
    return _write(path, dict(weights), base.model_config, base.tokenizer_spec, step, train_loss, val_loss, train_config, ADAPTER, base.checksum)


def _write(path, tensors, model_config, tokenizer_spec, step, train_loss, val_loss, train_config, kind, base_checksum=None) -> str:
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "gptkit_version": __version__,
        "kind": kind,
        "model_config": json.dumps(model_config.to_dict()),
        "tokenizer": json.dumps(tokenizer_spec, ensure_ascii=False),
        "train_config": json.dumps(train_config or {}),
        "step": str(step),
        "train_loss": json.dumps(train_loss),
        "val_loss": json.dumps(val_loss),
        "checksum": "sha256:" + weights_checksum(tensors),
    }
    if base_checksum is not None:
        metadata["base_checksum"] = base_checksum
    atomic_write_bytes(path, _serialize(tensors, metadata))
    return metadata["checksum"]


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and verify a checkpoint (format version, checksum, metadata); a damaged file raises
    DamagedFile. (run_folder.load_run_checkpoint also names the run's last good checkpoint.)"""
    path = Path(path)
    tensors, metadata = _open(path, "checkpoint", CHECKPOINT_FORMAT)
    expected = metadata.get("checksum", "").removeprefix("sha256:")
    if weights_checksum(tensors) != expected:
        raise DamagedFile(path, "is corrupted: its weights do not match the checksum stored with them")
    return _checkpoint_from(path, metadata, tensors)


def _checkpoint_from(path: Path, metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> Checkpoint:
    try:
        kind = checkpoint_kind(metadata)
        return Checkpoint(
            model_config=_model_config_from(metadata["model_config"]),
            tokenizer_spec=json.loads(metadata["tokenizer"]),
            state_dict=tensors,
            step=int(metadata["step"]),
            train_loss=json.loads(metadata.get("train_loss", "null")),
            val_loss=json.loads(metadata.get("val_loss", "null")),
            train_config=json.loads(metadata.get("train_config", "{}")),
            gptkit_version=metadata.get("gptkit_version", "?"),
            kind=kind,
            base_checksum=_base_checksum(metadata, kind),
            checksum=metadata.get("checksum"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DamagedFile(path, f"has damaged metadata ({type(e).__name__}: {e})") from None


def _base_checksum(metadata: dict[str, str], kind: str) -> str | None:
    base = metadata.get("base_checksum")
    if kind == ADAPTER and not (base or "").startswith("sha256:"):
        raise ValueError("an adapter without the checksum of its base model")
    return base if kind == ADAPTER else None


def _model_config_from(text: str) -> ModelConfig:
    """The saved model config, validated. A field it lacks takes its default: checkpoints written before
    vocab_multiple existed have unpadded embeddings, which is vocab_multiple = 1."""
    config = ModelConfig(**json.loads(text))
    problems = config.validate()
    if problems:
        raise ValueError("; ".join(problems))
    return config


def peek_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint's metadata alone (its state_dict is empty): reads the small header, not the
    weights, so it is instant but verifies nothing beyond the header. The tensors' names and shapes
    are in checkpoint_format.read_checkpoint_header(path).tensors."""
    path = Path(path)
    return _checkpoint_from(path, read_checkpoint_header(path).metadata, {})


# ---------------------------------------------------------------------------------------------------
# Resume state: optimizer, RNGs, sampler


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (the moments) and JSON (hyperparameters, scalars)."""
    tensors, scalars = {}, {}
    for param_id, state in state_dict["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{key}"] = value
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = value
    for name, value in info["scalars"].items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    groups = info["param_groups"]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


def save_resume_state(path: str | Path, optimizer, step: int, rng: dict[str, torch.Tensor], extra: dict) -> None:
    """`rng`: named generator states (uint8 tensors); `extra`: anything JSON (best val loss, the
    grad scaler, the python/numpy RNGs, the checksum of the checkpoint this state belongs to).
    `optimizer`: the optimizer, or its state_dict() (already gathered from the ranks under FSDP)."""
    tensors, optimizer_info = _flatten_optimizer(optimizer if isinstance(optimizer, dict) else optimizer.state_dict())
    tensors.update({f"rng.{name}": state for name, state in rng.items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {
        "format": RESUME_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "gptkit_version": __version__,
        "step": str(step),
        "optimizer": json.dumps(optimizer_info),
        "extra": json.dumps(extra),
    }
    metadata["checksum"] = "sha256:" + state_checksum(tensors, metadata)
    atomic_write_bytes(path, _serialize(tensors, metadata))


def load_resume_state(path: str | Path) -> tuple[dict, int, dict[str, torch.Tensor], dict]:
    """Returns (optimizer state_dict, step, rng states, extra), after verifying the checksum."""
    path = Path(path)
    tensors, metadata = _open(path, "resume state", RESUME_FORMAT)
    expected = metadata.get("checksum")
    if expected is not None and expected.removeprefix("sha256:") != state_checksum(tensors, metadata):
        raise DamagedFile(path, "is corrupted: its contents do not match the checksum stored with them")
    try:
        optimizer_state = _unflatten_optimizer(tensors, json.loads(metadata["optimizer"]))
        rng = {name.removeprefix("rng."): t for name, t in tensors.items() if name.startswith("rng.")}
        return optimizer_state, int(metadata["step"]), rng, json.loads(metadata.get("extra", "{}"))
    except (KeyError, TypeError, ValueError) as e:
        raise DamagedFile(path, f"has damaged metadata ({type(e).__name__}: {e})") from None
