"""Character-level tokenizer: one id per distinct character of the training text.

The simplest tokenizer there is, and the one nanoGPT's Shakespeare example uses: the vocabulary is
the sorted set of characters in the corpus (65 for tiny Shakespeare), followed by `<|endoftext|>`.

A character the corpus never showed has no id. By default encoding it is an error that names it;
built with `unk=True`, the vocabulary gets one more id, `<unk>`, that stands for every unseen
character (the text then no longer round-trips: decoding gives back the string "<unk>").
"""

from __future__ import annotations

from collections.abc import Iterable

from gptkit.errors import GptkitError
from gptkit.tokenizers.base import ENDOFTEXT, Tokenizer

UNK = "<unk>"


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: str, unk: bool = False):
        if len(set(chars)) != len(chars):
            raise GptkitError("char tokenizer: its character list has duplicates (corrupted tokenizer spec?)")
        self.chars = chars
        self.unk = unk
        self._id_of = {ch: i for i, ch in enumerate(chars)}
        self._eot = len(chars)  # the special tokens come right after the characters
        self._unk = len(chars) + 1 if unk else None

    @classmethod
    def train(cls, text: str | Iterable[str], unk: bool = False) -> "CharTokenizer":
        """Build the vocabulary from a corpus (a string, or pieces of one): every distinct character,
        sorted by code point."""
        seen: set[str] = set()
        for piece in [text] if isinstance(text, str) else text:
            seen.update(piece)
        return cls("".join(sorted(seen)), unk=unk)

    @property
    def name(self) -> str:
        return "char:unk" if self.unk else "char"

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + (2 if self.unk else 1)

    @property
    def eot_id(self) -> int:
        return self._eot

    @property
    def special_tokens(self) -> dict[str, int]:
        return {ENDOFTEXT: self._eot, **({UNK: self._unk} if self.unk else {})}

    def encode_ordinary(self, text: str) -> list[int]:
        id_of = self._id_of
        if self.unk:
            return [id_of.get(ch, self._unk) for ch in text]
        try:
            return [id_of[ch] for ch in text]
        except KeyError:
            unknown = sorted({ch for ch in text if ch not in id_of})
            shown = ", ".join(repr(ch) for ch in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise GptkitError(
                f"the text has {len(unknown)} character(s) outside this char tokenizer's vocabulary: {shown}",
                hint="a char vocabulary holds only the characters of its training corpus; remove them, "
                "train it with <unk> (char:unk), or use a byte-level tokenizer such as bpe",
            ) from None

    def decode(self, ids: list[int]) -> str:
        chars, eot = self.chars, self._eot
        out = []
        for i in ids:
            if 0 <= i < eot:
                out.append(chars[i])
            elif i == eot:
                out.append(ENDOFTEXT)
            elif i == self._unk:
                out.append(UNK)
            else:
                raise GptkitError(f"token id {i} is outside the char vocabulary (size {self.vocab_size})")
        return "".join(out)

    def spec(self) -> dict:
        # "unk" appears only when set, so specs written before the option existed stay identical.
        return {"kind": self.kind, "chars": self.chars, **({"unk": True} if self.unk else {})}
