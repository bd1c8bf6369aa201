"""The tokenizer of a Hugging Face folder, as a gptkit tokenizer spec (read_folder_tokenizer).

In order of trust:

  1. gptkit.json, which `gptkit export --format hf` writes next to tokenizer.json: the exact spec of the
     tokenizer the model was trained with (char, bpe, sentencepiece, tiktoken, hf-bpe), so an exported
     folder comes back with the very same tokenizer, whatever its kind.
  2. tokenizer.json (or vocab.json + merges.txt) alone, rebuilt where gptkit has an engine for it:
       byte-level BPE      GPT-2's ByteLevel pre-tokenizer, or Split(regex) + ByteLevel   -> hf-bpe (hf_gpt2.py)
       gptkit's char       a BPE with no merges and no pre-tokenizer whose tokens are    -> char
                           single characters numbered 0..n-1, <|endoftext|> at n (and <unk> at n + 1)
     and refused by name otherwise: a SentencePiece-style file (Unigram, or BPE with byte fallback) needs
     the SentencePiece model itself, which tokenizer.json does not hold; WordPiece and others have no
     gptkit engine at all.
"""

from __future__ import annotations

import json
from pathlib import Path

from gptkit.errors import GptkitError
from gptkit.tokenizers.base import ENDOFTEXT
from gptkit.tokenizers.char import UNK
from gptkit.tokenizers.hf_gpt2 import read_hf_tokenizer

EXPORT_RECORD = "gptkit.json"


def export_record(path: Path) -> dict | None:
    """gptkit.json of a folder written by `gptkit export --format hf` (None for other folders)."""
    record = path / EXPORT_RECORD
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise GptkitError(f"{record} is not valid JSON ({e})", hint="delete it to read the folder as plain Hugging Face files") from None
    return data if isinstance(data, dict) and data.get("format") == "gptkit.hf-export" else None


def _char_spec(data: dict) -> dict | None:
    """gptkit's char tokenizer as export/tokenizer_files.py writes it, or None when `data` is something else."""
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("merges") or data.get("pre_tokenizer") or data.get("normalizer"):
        return None
    specials = {t.get("content"): t.get("id") for t in data.get("added_tokens") or []}
    vocab = {t: i for t, i in (model.get("vocab") or {}).items() if t not in specials}
    chars = sorted(vocab, key=vocab.get)
    n = len(chars)
    if not chars or any(len(c) != 1 for c in chars) or [vocab[c] for c in chars] != list(range(n)):
        return None
    unk = model.get("unk_token") == UNK
    if specials != {ENDOFTEXT: n, **({UNK: n + 1} if unk else {})}:
        return None
    return {"kind": "char", "chars": "".join(chars), **({"unk": True} if unk else {})}


def _sentencepiece_style(data: dict) -> str | None:
    model = data.get("model") or {}
    if model.get("type") == "Unigram":
        return "SentencePiece-style Unigram tokenizer"
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        return "SentencePiece-style BPE (byte fallback)"
    return None


def read_folder_tokenizer(path: str | Path) -> dict:
    """The gptkit tokenizer spec of a Hugging Face folder (module docstring)."""
    path = Path(path)
    recorded = (export_record(path) or {}).get("tokenizer")
    if isinstance(recorded, dict):
        return recorded
    if (path / "tokenizer.json").is_file():
        try:
            data = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise GptkitError(f"{path / 'tokenizer.json'} is not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise GptkitError(f"{path / 'tokenizer.json'} holds no tokenizer")
        char = _char_spec(data)
        if char is not None:
            return char
        kind = _sentencepiece_style(data)
        if kind is not None:
            raise GptkitError(
                f"{path} holds a {kind} in tokenizer.json, which gptkit cannot rebuild: its SentencePiece tokenizer "
                "runs the SentencePiece model file itself, and tokenizer.json does not hold one",
                hint="a folder written by `gptkit export` keeps the exact tokenizer in gptkit.json (put it back); "
                "or pass the original tokenizer with --tokenizer",
            )
    return read_hf_tokenizer(path)  # byte-level BPE, or its refusal naming what the folder holds


def spec_vocab_size(spec: dict) -> int | None:
    """The ids a spec's tokenizer uses, where the spec alone says (char, hf-bpe); None otherwise."""
    if spec.get("kind") == "char" and isinstance(spec.get("chars"), str):
        return len(spec["chars"]) + (2 if spec.get("unk") else 1)
    if spec.get("kind") == "hf-bpe" and isinstance(spec.get("vocab"), dict) and isinstance(spec.get("special_tokens"), dict):
        return max([*spec["vocab"].values(), *spec["special_tokens"].values()]) + 1
    return None
