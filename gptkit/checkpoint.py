"""Checkpoints: safetensors files that carry everything needed to use the model alone.

    ckpt.safetensors      weights + string metadata:
                              format, format_version, gptkit_version,
                              model_config (JSON), tokenizer (JSON spec), train_config (JSON),
                              step, train_loss, val_loss, checksum (sha256 of the weights)
    resume.safetensors    what `train --resume` needs on top: optimizer moments, RNG states, the
                          batch sampler's position, the best val loss so far (tensors + JSON metadata)

safetensors, not pickle: opening a checkpoint from a stranger cannot run code. Every write is atomic
(see fileio.py), and loading verifies the checksum, so a damaged file is reported, never half-used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gptkit import __version__
from gptkit.errors import GptkitError
from gptkit.fileio import atomic_write_bytes
from gptkit.model import GPT, ModelConfig

CHECKPOINT_FORMAT = "gptkit.checkpoint"
RESUME_FORMAT = "gptkit.resume"
FORMAT_VERSION = 1


def weights_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)


def _open(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file, turning every way it can be broken into a clear GptkitError."""
    from safetensors import SafetensorError, safe_open

    if not path.exists():
        raise GptkitError(f"{kind} {path} does not exist", hint="train one with `gptkit train`, or check the path")
    if path.is_dir():
        raise GptkitError(f"{kind} {path} is a folder", hint=f"pass the file, e.g. {path / 'ckpt.safetensors'}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, ValueError, OSError, RuntimeError) as e:
        raise GptkitError(
            f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:120]})",
            hint="the file is truncated or not a gptkit checkpoint; use an earlier checkpoint (best.safetensors) "
            "or train again",
        ) from None
    return tensors, metadata


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

    def build_model(self, device: torch.device | str = "cpu") -> GPT:
        model = GPT(self.model_config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            raise GptkitError(f"checkpoint weights do not fit its model config: {str(e).splitlines()[0]}") from None
        return model.to(device)

    def tokenizer(self):
        from gptkit.tokenizers import tokenizer_from_spec

        return tokenizer_from_spec(self.tokenizer_spec)


def save_checkpoint(
    path: str | Path,
    model: GPT,
    tokenizer_spec: dict,
    step: int,
    train_loss: float | None = None,
    val_loss: float | None = None,
    train_config: dict | None = None,
) -> None:
    tensors = {k: v for k, v in model.state_dict().items()}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "gptkit_version": __version__,
        "model_config": json.dumps(model.config.to_dict()),
        "tokenizer": json.dumps(tokenizer_spec, ensure_ascii=False),
        "train_config": json.dumps(train_config or {}),
        "step": str(step),
        "train_loss": json.dumps(train_loss),
        "val_loss": json.dumps(val_loss),
        "checksum": "sha256:" + weights_checksum(tensors),
    }
    atomic_write_bytes(path, _serialize(tensors, metadata))


def _check_format(path: Path, metadata: dict, expected: str) -> None:
    if metadata.get("format") != expected:
        raise GptkitError(
            f"{path} is a safetensors file but not a {expected} file (format {metadata.get('format')!r})",
            hint="pass a checkpoint written by `gptkit train`",
        )
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise GptkitError(
            f"{path} has format version {version}, newer than this gptkit (reads up to {FORMAT_VERSION})",
            hint="upgrade gptkit: pip install -U gptkit",
        )


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and verify a checkpoint (checksum, format version, metadata)."""
    path = Path(path)
    tensors, metadata = _open(path, "checkpoint")
    _check_format(path, metadata, CHECKPOINT_FORMAT)
    expected = metadata.get("checksum", "").removeprefix("sha256:")
    if weights_checksum(tensors) != expected:
        raise GptkitError(
            f"{path} is corrupted: its weights do not match the checksum stored with them",
            hint="use an earlier checkpoint (best.safetensors) or train again",
        )
    try:
        model_config = ModelConfig(**json.loads(metadata["model_config"]))
        checkpoint = Checkpoint(
            model_config=model_config,
            tokenizer_spec=json.loads(metadata["tokenizer"]),
            state_dict=tensors,
            step=int(metadata["step"]),
            train_loss=json.loads(metadata.get("train_loss", "null")),
            val_loss=json.loads(metadata.get("val_loss", "null")),
            train_config=json.loads(metadata.get("train_config", "{}")),
            gptkit_version=metadata.get("gptkit_version", "?"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise GptkitError(f"{path} has damaged metadata ({type(e).__name__}: {e})") from None
    return checkpoint


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
    tensors, optimizer_info = _flatten_optimizer(optimizer.state_dict())
    tensors.update({f"rng.{name}": state for name, state in rng.items()})
    metadata = {
        "format": RESUME_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "gptkit_version": __version__,
        "step": str(step),
        "optimizer": json.dumps(optimizer_info),
        "extra": json.dumps(extra),
    }
    atomic_write_bytes(path, _serialize(tensors, metadata))


def load_resume_state(path: str | Path) -> tuple[dict, int, dict[str, torch.Tensor], dict]:
    """Returns (optimizer state_dict, step, rng states, extra)."""
    path = Path(path)
    tensors, metadata = _open(path, "resume state")
    _check_format(path, metadata, RESUME_FORMAT)
    try:
        optimizer_state = _unflatten_optimizer(tensors, json.loads(metadata["optimizer"]))
        rng = {name.removeprefix("rng."): t for name, t in tensors.items() if name.startswith("rng.")}
        return optimizer_state, int(metadata["step"]), rng, json.loads(metadata.get("extra", "{}"))
    except (KeyError, TypeError, ValueError) as e:
        raise GptkitError(f"{path} has damaged metadata ({type(e).__name__}: {e})") from None
