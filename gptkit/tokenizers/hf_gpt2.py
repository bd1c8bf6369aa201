"""GPT-2-style byte-level BPE read from a Hugging Face folder (vocab.json + merges.txt, or tokenizer.json).

Hugging Face stores each token as a string in GPT-2's printable stand-in alphabet: every byte 0..255 is
mapped to one visible character (bytes_to_unicode below), so "Ġthe" is the bytes b" the". Undoing that
map gives each token's bytes, and with the file's ids as tiktoken "ranks" the folder's tokenizer runs
on tiktoken's engine and gives exactly the folder's ids:

    tiktoken merges, inside each regex chunk, the adjacent pair whose joined token has the lowest rank;
    Hugging Face applies the merges in merges.txt order. The two agree when a merge's result has a
    higher id than every earlier merge's result, which is how GPT-2's vocabulary and every BPE the
    `tokenizers` library trains are numbered; a folder where that fails is refused, not half-matched.

The split regex is GPT-2's (the ByteLevel pre-tokenizer's own) or, for a tokenizer.json whose
pre-tokenizer is Split(regex) + ByteLevel, that regex (gptkit's exports of BPEs with the gpt4 or
gpt4o pattern, cl100k_base, o200k_base).

The spec is self-contained JSON (kind "hf-bpe": token strings -> ids, the special tokens, the regex),
so a checkpoint imported from the folder carries its tokenizer without the folder. Nothing is
downloaded. Tokenizers of other kinds (WordPiece, SentencePiece, a normalizer, add_prefix_space)
are refused with a message saying what was found.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from gptkit.errors import GptkitError
from gptkit.tokenizers.base import ENDOFTEXT
from gptkit.tokenizers.tiktoken_backed import TiktokenBackedTokenizer

# GPT-2's pre-tokenizer regex, as Hugging Face's ByteLevel pre-tokenizer (and the original encoder.py) has it.
GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
KIND = "hf-bpe"


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character map: printable Latin-1 bytes stand for themselves, the other 68 bytes
    (control characters, space, ...) take the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def token_to_bytes(token: str, source: str) -> bytes:
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    try:
        return bytes(decoder[c] for c in token)
    except KeyError:
        raise GptkitError(f"{source}: the token {token!r} is not in GPT-2's byte alphabet: not a byte-level BPE") from None


def is_hf_tokenizer_folder(path: Path) -> bool:
    """A folder with Hugging Face tokenizer files (and no gptkit meta.json / checkpoint)."""
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return True
    if (path / "tokenizer.json").is_file():
        try:
            data = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return False
        return isinstance(data, dict) and "model" in data and "kind" not in data
    return (path / "config.json").is_file() and not any((path / n).exists() for n in ("meta.json", "ckpt.safetensors"))


def _refuse(path: Path, what: str) -> GptkitError:
    return GptkitError(
        f"{path} holds a {what}, not a GPT-2-style byte-level BPE: gptkit reads only those from Hugging Face folders",
        hint="use a GPT-2 folder (vocab.json + merges.txt or tokenizer.json), or another --tokenizer",
    )


def _byte_level_pattern(pre: dict | None) -> str | None:
    """The split regex of a byte-level pre-tokenizer, None for anything else. Two forms: GPT-2's own,
    ByteLevel with its built-in regex and no prefix space (alone or in a one-step Sequence); and a
    custom regex, Split(pattern, "isolated") then ByteLevel without its regex (what gptkit exports for
    a BPE with another split pattern: gpt4, gpt4o, cl100k_base, o200k_base, ...)."""
    if not isinstance(pre, dict):
        return None
    if pre.get("type") == "ByteLevel":
        plain = pre.get("use_regex", True) and not pre.get("add_prefix_space", False)
        return GPT2_REGEX if plain else None
    if pre.get("type") != "Sequence":
        return None
    parts = pre.get("pretokenizers") or []
    if len(parts) == 1:
        return _byte_level_pattern(parts[0])
    if len(parts) == 2 and all(isinstance(p, dict) for p in parts):
        split, byte_level = parts
        regex = (split.get("pattern") or {}).get("Regex") if isinstance(split.get("pattern"), dict) else None
        if isinstance(regex, str) and re.search(r"\{\d+(?:,\d*)?\}\+", regex):
            return None  # Oniguruma's `X{n,m}+` repeats the group; tiktoken would read it as possessive
        if (split.get("type") == "Split" and isinstance(regex, str) and str(split.get("behavior")).lower() == "isolated"
                and not split.get("invert", False) and byte_level.get("type") == "ByteLevel"
                and not byte_level.get("use_regex", True) and not byte_level.get("add_prefix_space", False)):
            return regex
    return None


def read_hf_tokenizer(path: str | Path) -> dict:
    """The kind "hf-bpe" spec of the tokenizer in a Hugging Face folder (tokenizer.json preferred)."""
    path = Path(path)
    specials: dict[str, int] = {}
    pattern = GPT2_REGEX
    if (path / "tokenizer.json").is_file():
        data = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise _refuse(path, f"{model.get('type', 'unknown')} tokenizer")
        if data.get("normalizer") is not None:
            raise _refuse(path, "BPE with a text normalizer")
        pattern = _byte_level_pattern(data.get("pre_tokenizer"))
        if pattern is None and re.search(r"\{\d+(?:,\d*)?\}\+", json.dumps(data.get("pre_tokenizer"))):
            raise _refuse(path, "byte-level BPE whose split regex has {n,m}+ (Hugging Face repeats it, tiktoken would not)")
        if pattern is None:
            raise _refuse(path, "BPE without a byte-level pre-tokenizer")
        vocab, merges = model.get("vocab") or {}, model.get("merges") or []
        merges = [m.split(" ") if isinstance(m, str) else list(m) for m in merges]
        specials = {t["content"]: int(t["id"]) for t in data.get("added_tokens") or [] if t.get("special", True)}
    elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
        lines = (path / "merges.txt").read_text(encoding="utf-8").splitlines()
        merges = [line.split(" ") for line in lines if line and not line.startswith("#version")]
    elif (path / "tokenizer.model").is_file() or (path / "spiece.model").is_file():
        raise _refuse(path, "SentencePiece tokenizer")
    else:
        raise GptkitError(f"{path} has no tokenizer files (vocab.json + merges.txt, or tokenizer.json)")
    if ENDOFTEXT in vocab and ENDOFTEXT not in specials:  # GPT-2's vocab.json lists it as a token
        specials[ENDOFTEXT] = int(vocab[ENDOFTEXT])
    vocab = {t: int(i) for t, i in vocab.items() if t not in specials}
    _check_merge_order(path, vocab, merges)
    return {"kind": KIND, "pattern": pattern, "vocab": vocab, "special_tokens": specials, "source": path.name}


def _check_merge_order(path: Path, vocab: dict[str, int], merges: list[list[str]]) -> None:
    """tiktoken's rank order must be the merge order (module docstring): refuse a folder where it is not.
    Several merges may make the same token (every cut of it, as an export of OpenAI's ranks lists them):
    only one of them can apply to a given chunk, at that token's rank."""
    last = -1
    for i, pair in enumerate(merges):
        if len(pair) != 2:
            raise GptkitError(f"{path}: merge {i} is not a pair of tokens ({' '.join(pair)!r})")
        joined = vocab.get(pair[0] + pair[1])
        if joined is None or pair[0] not in vocab or pair[1] not in vocab:
            raise GptkitError(f"{path}: merge {i} ({' '.join(pair)}) uses or makes a token missing from the vocabulary")
        if joined < last:
            raise _refuse(path, "BPE whose ids are not in merge order (tiktoken could not reproduce it)")
        last = joined


class HFByteBPETokenizer(TiktokenBackedTokenizer):
    kind = KIND

    def __init__(self, vocab: dict[str, int], special_tokens: dict[str, int], pattern: str = GPT2_REGEX, source: str = "hf"):
        import tiktoken

        self.vocab, self.specials, self.pattern, self.source = dict(vocab), dict(special_tokens), pattern, source
        ranks = {token_to_bytes(t, source): i for t, i in self.vocab.items()}
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing or len(ranks) != len(self.vocab):
            raise GptkitError(f"{source}: not a byte-level BPE (it lacks {len(missing)} of the 256 byte tokens, or repeats one)")
        self._n_vocab = max([*ranks.values(), *self.specials.values()]) + 1
        self.encoding = tiktoken.Encoding(name=f"hf-{source}", pat_str=pattern, mergeable_ranks=ranks, special_tokens=self.specials)

    @classmethod
    def from_spec(cls, spec: dict) -> "HFByteBPETokenizer":
        vocab, specials = spec.get("vocab"), spec.get("special_tokens")
        if not isinstance(vocab, dict) or not isinstance(specials, dict) or not isinstance(spec.get("pattern"), str):
            raise GptkitError("tokenizer spec of kind 'hf-bpe' is damaged (vocab, special_tokens, pattern)")
        return cls(vocab, specials, spec["pattern"], str(spec.get("source", "hf")))

    @classmethod
    def from_folder(cls, path: str | Path) -> "HFByteBPETokenizer":
        return cls.from_spec(read_hf_tokenizer(path))

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    @property
    def name(self) -> str:
        return f"hf-bpe:{self.source}"

    def spec(self) -> dict:
        return {"kind": self.kind, "pattern": self.pattern, "vocab": self.vocab, "special_tokens": self.specials, "source": self.source}
