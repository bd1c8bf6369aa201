"""Character-level tokenizer: one id per distinct character of the training text.

The simplest tokenizer there is, and the one nanoGPT's Shakespeare example uses: the vocabulary is
the sorted set of characters in the corpus (65 for tiny Shakespeare), followed by `<|endoftext|>`.
"""

from __future__ import annotations

from gptkit.errors import GptkitError
from gptkit.tokenizers.base import ENDOFTEXT, Tokenizer


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: str):
        if len(set(chars)) != len(chars):
            raise GptkitError("char tokenizer: its character list has duplicates (corrupted tokenizer spec?)")
        self.chars = chars
        self._id_of = {ch: i for i, ch in enumerate(chars)}
        self._eot = len(chars)  # the special token comes right after the characters

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        """Build the vocabulary from a corpus: every distinct character, sorted by code point."""
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    @property
    def eot_id(self) -> int:
        return self._eot

    def encode(self, text: str) -> list[int]:
        id_of = self._id_of
        try:
            return [id_of[ch] for ch in text]
        except KeyError:
            unknown = sorted({ch for ch in text if ch not in id_of})
            shown = ", ".join(repr(ch) for ch in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise GptkitError(
                f"the text has {len(unknown)} character(s) outside this char tokenizer's vocabulary: {shown}",
                hint="a char vocabulary holds only the characters of its training corpus; remove them or "
                "use a byte-level tokenizer such as gpt2",
            ) from None

    def decode(self, ids: list[int]) -> str:
        chars, eot = self.chars, self._eot
        out = []
        for i in ids:
            if i == eot:
                out.append(ENDOFTEXT)
            elif 0 <= i < eot:
                out.append(chars[i])
            else:
                raise GptkitError(f"token id {i} is outside the char vocabulary (size {self.vocab_size})")
        return "".join(out)

    def spec(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}
