"""SentencePiece tokenizers (BPE or unigram), trained and run by Google's `sentencepiece` library.

SentencePiece sees text as a stream of characters where a space is the visible symbol "▁", so
pieces look like "▁the" or "ing". Two model types:

    bpe       merges the most frequent adjacent pair, like gptkit's BPE but over characters
    unigram   starts from many candidate pieces and prunes those that least help the likelihood
              of the corpus; encoding picks the most probable segmentation (Viterbi)

We train it to lose nothing: no Unicode normalisation, spaces kept as they are, no "▁" added at
the start, and `byte_fallback` (a character it has no piece for becomes its UTF-8 bytes, <0x..>).
So decode(encode(text)) == text for any text, with one exception: a literal "▁" (U+2581) in the
text comes back as a space, since that is how SentencePiece writes spaces.

The trained model is a protobuf of a few hundred kB. The spec carries it base64-encoded, so
meta.json and every checkpoint rebuild this exact tokenizer with no file beside them.
"""

from __future__ import annotations

import base64
import io
import re
import os
from collections.abc import Iterable, Iterator, Sequence

from gptkit.errors import GptkitError
from gptkit.tokenizers.base import ENDOFTEXT, Tokenizer

MODEL_TYPES = ("bpe", "unigram")


def _lines(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        yield from text.split("\n")


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, model: bytes, model_type: str):
        import sentencepiece as spm

        self.model = model
        self.model_type = model_type
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model)
        except (RuntimeError, OSError) as e:
            raise GptkitError(f"not a valid SentencePiece model ({str(e)[:100]}; corrupted tokenizer spec?)") from None
        # Control symbols are SentencePiece's special tokens: encode never produces them from text.
        self._specials = {self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size()) if self.sp.is_control(i)}
        self._bytes = [self._bytes_of(i) for i in range(self.sp.get_piece_size())]

    def _bytes_of(self, token_id: int) -> bytes:
        """What one piece decodes to: "▁the" -> b" the", "<0xE2>" -> b"\xe2", a special -> its name."""
        piece = self.sp.id_to_piece(token_id)
        if self.sp.is_byte(token_id):
            return bytes([int(piece[1:-1], 16)])
        if self.sp.is_unknown(token_id):
            return " \u2047 ".encode("utf-8")  # " ⁇ ", as SentencePiece decodes <unk>
        return piece.replace("\u2581", " ").encode("utf-8")

    @classmethod
    def train(
        cls,
        text: str | Iterable[str],
        vocab_size: int,
        model_type: str = "bpe",
        special_tokens: Sequence[str] = (ENDOFTEXT,),
    ) -> "SentencePieceTokenizer":
        """Train on a corpus (a string, or pieces of one). SentencePiece learns from lines: newlines
        are never inside a piece, they are encoded as the byte <0x0A>."""
        import sentencepiece as spm

        if model_type not in MODEL_TYPES:
            raise GptkitError(f"unknown SentencePiece model type {model_type!r}", hint="use bpe or unigram")
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_lines([text] if isinstance(text, str) else text),
                model_writer=model,
                model_type=model_type,
                vocab_size=vocab_size,
                # lossless: see the module docstring
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                byte_fallback=True,
                # ids: <unk> = 0 (required, never produced with byte fallback), then our specials
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                control_symbols=list(special_tokens),
                hard_vocab_limit=False,  # a small corpus may support fewer unigram pieces: take them
                num_threads=os.cpu_count() or 1,
                minloglevel=2,  # warnings and errors only
            )
        except RuntimeError as e:
            message = str(e).split("] ")[-1].strip()  # drop the C++ source location
            # Its advice names its own flags (--character_coverage), which gptkit does not have.
            message = re.sub(r"\s*(Increase|Decrease|Please)[^.]*--\w+ option\.?", "", message).strip()
            hint = "use more text or another --vocab-size"
            required = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
            if required:  # every character of the text needs a piece of its own
                hint = f"give --vocab-size at least {int(required.group(2)) + len(special_tokens) + 1} (the text has {required.group(2)} different characters)"
            raise GptkitError(f"SentencePiece could not train: {message}", hint=hint) from None
        return cls(model.getvalue(), model_type)

    @property
    def name(self) -> str:
        return f"sp-{self.model_type}:{self.vocab_size}"

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def eot_id(self) -> int | None:
        return self._specials.get(ENDOFTEXT)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._specials)

    def encode_ordinary(self, text: str) -> list[int]:
        # Line by line gives the same ids (no piece holds a newline) and is several times faster for
        # SentencePiece's BPE, whose cost grows faster than linearly with the length of one input.
        lines = text.split("\n")
        lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        return [i for ids in self.sp.encode(lines) for i in ids]

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        # Piece by piece, so that decoding ids in chunks and joining the bytes gives the same result
        # as decoding them all at once (SentencePiece's own decode would drop the control symbols).
        self.check_ids(ids)
        return b"".join([self._bytes[i] for i in ids])

    def piece(self, token_id: int) -> str:
        """The piece as SentencePiece writes it ("▁the", "<0x0A>")."""
        return self.sp.id_to_piece(token_id)

    def spec(self) -> dict:
        return {"kind": self.kind, "model_type": self.model_type, "model": base64.b64encode(self.model).decode("ascii")}

    @classmethod
    def from_spec(cls, spec: dict) -> "SentencePieceTokenizer":
        try:
            model = base64.b64decode(spec["model"], validate=True)
        except (ValueError, TypeError):
            raise GptkitError("the SentencePiece model in the tokenizer spec is not valid base64 (corrupted spec?)") from None
        return cls(model, spec["model_type"])
