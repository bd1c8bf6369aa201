"""The interface every tokenizer implements.

A tokenizer turns text into a list of integer ids and back. Each one can describe itself as a
*spec*: a small JSON-able dict that rebuilds it exactly. The spec is stored in the data folder's
`meta.json` and in every checkpoint, so a model always travels with the tokenizer it was trained on.

Special tokens (`<|endoftext|>`, ...) are ids outside the learned vocabulary. Text that happens to
contain the string "<|endoftext|>" is ordinary text unless the caller allows that special by name:

    tok.encode("a<|endoftext|>b")                          # "<|endoftext|>" spelled out as plain text
    tok.encode("a<|endoftext|>b", allowed_special="all")   # [..., tok.eot_id, ...]

Subclasses implement `encode_ordinary` (no specials); `encode` adds the special-token handling.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Collection
from pathlib import Path

ENDOFTEXT = "<|endoftext|>"  # the document separator, GPT-2's name for it


class Tokenizer(ABC):
    kind: str  # "char", "bpe", "sentencepiece", "tiktoken"
    # True when the base alphabet is the 256 bytes: every UTF-8 text encodes, and decode_bytes gives
    # back exactly the bytes that were encoded.
    byte_level: bool = False

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct ids: the model's embedding table has this many rows."""

    @property
    @abstractmethod
    def eot_id(self) -> int | None:
        """Id of `<|endoftext|>`, put between documents; None when the tokenizer has none."""

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token string -> id. By default just `<|endoftext|>`."""
        return {} if self.eot_id is None else {ENDOFTEXT: self.eot_id}

    @abstractmethod
    def encode_ordinary(self, text: str) -> list[int]:
        """Text to ids, with every character treated as plain text (no special tokens)."""

    def encode_to_array(self, text: str):
        """encode_ordinary as a NumPy array: what `prepare` writes into shards. Tokenizers that can
        skip building a Python list of ints (tiktoken's) override it."""
        import numpy as np

        return np.asarray(self.encode_ordinary(text), dtype=np.int64)

    def encode(self, text: str, allowed_special: Collection[str] | str = ()) -> list[int]:
        """Text to ids. Special-token strings in `text` become their ids only when named in
        `allowed_special` (or when it is "all"); otherwise they are plain text."""
        specials = self._allowed_specials(allowed_special)
        if not specials:
            return self.encode_ordinary(text)
        # Longest first, so a special that is a prefix of another never wins over it.
        separators = "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True))
        ids: list[int] = []
        # With a capturing group, re.split returns text, special, text, special, ..., text.
        for i, part in enumerate(re.split(f"({separators})", text)):
            if i % 2:
                ids.append(specials[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def _allowed_specials(self, allowed: Collection[str] | str) -> dict[str, int]:
        from gptkit.errors import UsageError

        if allowed == "all":
            return dict(self.special_tokens)
        if isinstance(allowed, str):
            allowed = (allowed,)
        unknown = [s for s in allowed if s not in self.special_tokens]
        if unknown:
            raise UsageError(
                f"{', '.join(map(repr, unknown))} is not a special token of the {self.name} tokenizer",
                hint=f"its special tokens: {', '.join(self.special_tokens) or 'none'}",
            )
        return {s: self.special_tokens[s] for s in allowed}

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Ids to text. Special ids come back as their strings; bytes that do not form whole UTF-8
        characters (a byte-level token can hold half an emoji) become U+FFFD."""

    def decode_bytes(self, ids: list[int]) -> bytes:
        """Ids to the exact bytes they stand for (for byte-level tokenizers, a token may end in the
        middle of a character: concatenating bytes, not strings, keeps every round trip exact)."""
        return self.decode(ids).encode("utf-8")

    def check_ids(self, ids: list[int]) -> None:
        """Raise a clear error for ids outside the vocabulary (a mismatched tokenizer, usually)."""
        from gptkit.errors import GptkitError

        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise GptkitError(
                f"token id {bad[0]} is outside the {self.name} vocabulary (size {self.vocab_size})",
                hint="the ids were made by a different tokenizer; pass the one they came from",
            )

    @abstractmethod
    def spec(self) -> dict:
        """A JSON-able dict that `tokenizer_from_spec` turns back into an identical tokenizer."""

    @property
    def name(self) -> str:
        """Short human-readable name, e.g. `char`, `bpe:4096` or `gpt2`."""
        return self.kind

    def save(self, directory: str | Path) -> Path:
        """Write `tokenizer.json` (the spec) into `directory`."""
        from gptkit.fileio import atomic_write_text

        path = Path(directory) / "tokenizer.json"
        text = json.dumps(self.spec(), indent=2, ensure_ascii=False)
        # One BPE merge [left, right] per line instead of four: JSON strings never hold raw newlines,
        # so this only touches the layout.
        text = re.sub(r"\[\s+(\d+),\s+(\d+)\s+\]", r"[\1, \2]", text)
        atomic_write_text(path, text + "\n")
        return path
