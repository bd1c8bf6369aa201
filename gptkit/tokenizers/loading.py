"""Finding the tokenizer that an artifact was made with, and rebuilding it from its spec.

`--tokenizer` accepts any of these, so new text can be tokenized exactly as an existing model expects:

    gpt2, cl100k_base, o200k_base     a pretrained tiktoken encoding
    tok/                              a folder written by `gptkit tokenize train` (tokenizer.json)
    data/shakespeare                  a data folder written by `gptkit prepare` (meta.json)
    out/ckpt.safetensors  (or out/)   a checkpoint: the spec is in its metadata
    hf/gpt2/                          a Hugging Face folder: GPT-2-style byte-level BPE, or gptkit's own export
                                      (tokenizers/hf_folder.py)

Checkpoints are read for their metadata only (the safetensors header, see checkpoint_format.py),
without loading weights or importing torch, so `gptkit tokenize encode --tokenizer out/` starts instantly.
"""

from __future__ import annotations

import json
from pathlib import Path

from gptkit.checkpoint_format import CKPT_NAME, read_checkpoint_header
from gptkit.errors import GptkitError, UsageError
from gptkit.tokenizers.base import Tokenizer
from gptkit.tokenizers.bpe import BPETokenizer
from gptkit.tokenizers.char import CharTokenizer
from gptkit.tokenizers.hf_folder import read_folder_tokenizer
from gptkit.tokenizers.hf_gpt2 import HFByteBPETokenizer, is_hf_tokenizer_folder
from gptkit.tokenizers.pretrained import PRETRAINED, TiktokenTokenizer
from gptkit.tokenizers.sentencepiece_tokenizer import MODEL_TYPES, SentencePieceTokenizer

TRAINABLE = ("char", "bpe", "sp-bpe", "sp-unigram")  # kinds that learn their vocabulary from a corpus


def _require(spec: dict, key: str, kind: type):
    value = spec.get(key)
    if not isinstance(value, kind):
        raise GptkitError(
            f"tokenizer spec of kind {spec.get('kind')!r} lacks a valid {key!r}",
            hint="the file was made by a newer gptkit or is damaged",
        )
    return value


def tokenizer_from_spec(spec: dict) -> Tokenizer:
    """Rebuild a tokenizer from the spec stored in meta.json, tokenizer.json or a checkpoint."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind == "char":
        return CharTokenizer(_require(spec, "chars", str), unk=spec.get("unk") is True)
    if kind == "tiktoken":
        return TiktokenTokenizer(_require(spec, "encoding", str))
    if kind == "bpe":
        merges = _require(spec, "merges", list)
        if not all(isinstance(m, list) and len(m) == 2 and all(type(i) is int for i in m) for m in merges):
            raise GptkitError("tokenizer spec: BPE merges must be pairs of ids", hint="the file is damaged")
        specials = _require(spec, "special_tokens", list)
        return BPETokenizer(merges, _require(spec, "pattern", str), [str(s) for s in specials])
    if kind == "hf-bpe":
        return HFByteBPETokenizer.from_spec(spec)
    if kind == "sentencepiece":
        _require(spec, "model", str)
        if spec.get("model_type") not in MODEL_TYPES:
            raise GptkitError("tokenizer spec: unknown SentencePiece model type", hint="the file is damaged")
        return SentencePieceTokenizer.from_spec(spec)
    raise GptkitError(
        f"unrecognised tokenizer spec {str(spec)[:80]!r}",
        hint="the file was made by a newer gptkit or is damaged",
    )


def checkpoint_tokenizer_spec(path: Path) -> dict:
    """The tokenizer spec in a checkpoint's metadata, read without loading the weights."""
    metadata = read_checkpoint_header(path).metadata
    try:
        return json.loads(metadata["tokenizer"])
    except (KeyError, json.JSONDecodeError):
        raise GptkitError(f"{path} has a damaged tokenizer spec in its metadata", hint="use another checkpoint of the run") from None


def _json_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GptkitError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise GptkitError(f"{path} holds no tokenizer spec")
    return data


def spec_at(path: Path) -> dict:
    """The tokenizer spec stored at `path`: a folder (saved tokenizer, data folder, run folder), a
    tokenizer.json or meta.json file, or a checkpoint."""
    if path.is_dir() and is_hf_tokenizer_folder(path):  # a Hugging Face folder (hf_folder.py)
        return read_folder_tokenizer(path)
    if path.is_dir():
        for name in ("tokenizer.json", "meta.json", CKPT_NAME):
            if (path / name).is_file():
                return spec_at(path / name)
        raise GptkitError(
            f"{path} holds no tokenizer (no tokenizer.json, meta.json or {CKPT_NAME})",
            hint="pass a folder from `gptkit tokenize train` or `gptkit prepare`, or a checkpoint",
        )
    if path.suffix == ".safetensors":
        return checkpoint_tokenizer_spec(path)
    data = _json_file(path)
    if data.get("format") == "gptkit.data":  # a data folder's meta.json (see shards.write_meta)
        from gptkit.shards import read_meta

        return read_meta(path.parent)["tokenizer"]
    return data


def load_tokenizer(ref: str | Path) -> Tokenizer:
    """A pretrained encoding by name, or the tokenizer stored at a path (see the module docstring)."""
    ref = str(ref)
    if ref in PRETRAINED:
        return TiktokenTokenizer(ref)
    path = Path(ref)
    if not path.exists():
        kind = ref.partition(":")[0]
        if kind in TRAINABLE + ("sentencepiece",):
            raise UsageError(
                f"{ref!r} names a tokenizer to train, not one that exists",
                hint=f"train it first: gptkit tokenize train --kind {kind} FILES --out tok/, then pass --tokenizer tok/",
            )
        raise UsageError(
            f"tokenizer {ref!r} is neither a pretrained encoding nor an existing path",
            hint=f"pretrained: {', '.join(PRETRAINED)}; or a folder from `gptkit tokenize train` or `gptkit prepare`, "
            "or a checkpoint; `prepare` also trains char, char:unk, bpe:N, sp-bpe:N, sp-unigram:N",
        )
    return tokenizer_from_spec(spec_at(path))
