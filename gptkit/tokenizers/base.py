"""The interface every tokenizer implements.

A tokenizer turns text into a list of integer ids and back. Each one can describe itself as a
*spec*: a small JSON-able dict that rebuilds it exactly. The spec is stored in the data folder's
`meta.json` and in every checkpoint, so a model always travels with the tokenizer it was trained on.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

ENDOFTEXT = "<|endoftext|>"  # the document separator, GPT-2's name for it


class Tokenizer(ABC):
    kind: str  # "char", "tiktoken", ...

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct ids: the model's embedding table has this many rows."""

    @property
    @abstractmethod
    def eot_id(self) -> int | None:
        """Id of `<|endoftext|>`, put between documents; None when the tokenizer has none."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Text to ids. Special tokens written in the text are treated as plain text."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Ids to text."""

    @abstractmethod
    def spec(self) -> dict:
        """A JSON-able dict that `tokenizer_from_spec` turns back into an identical tokenizer."""

    @property
    def name(self) -> str:
        """Short human-readable name, e.g. `char` or `gpt2`."""
        return self.kind

    def save(self, directory: str | Path) -> Path:
        """Write `tokenizer.json` (the spec) into `directory`."""
        from gptkit.fileio import atomic_write_text

        path = Path(directory) / "tokenizer.json"
        atomic_write_text(path, json.dumps(self.spec(), indent=2, ensure_ascii=False) + "\n")
        return path
