"""gptkit's own byte-level BPE tokenizer, GPT-2/GPT-4 style.

    tok = BPETokenizer.train(text, vocab_size=4096)   # learns 4096 - 256 - 1 merges (see bpe_train.py)
    tok.encode("Hello world")                         # -> [..] via tiktoken's Rust engine
    tok.encode_reference("Hello world")               # the same ids, computed in plain Python

The vocabulary is:

    ids 0..255                 the 256 bytes: any UTF-8 text can be encoded, nothing is "unknown"
    ids 256..256+M-1           the M merges, in the order they were learned; token 256+i is the
                               concatenation of the two tokens in merges[i]
    the ids after that         special tokens, <|endoftext|> first

Encoding first cuts the text into chunks with a regex (PATTERNS below), then merges the bytes of
each chunk. The merged tokens load straight into `tiktoken.Encoding` (each token's bytes -> its id,
its "rank"), so encoding runs at tiktoken's speed; `encode_reference` is the same algorithm in a few
lines of Python, for reading and for tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gptkit.errors import GptkitError
from gptkit.tokenizers.base import ENDOFTEXT
from gptkit.tokenizers.bpe_train import count_chunks, learn_merges
from gptkit.tokenizers.tiktoken_backed import TiktokenBackedTokenizer

# How the text is cut before merging. Merges never cross these cuts, which keeps tokens word-like:
# letters with one leading space or punctuation mark, numbers, punctuation runs, whitespace.
PATTERNS = {
    # GPT-2's (r50k_base): contractions, " ?letters", " ?digits", " ?other", whitespace. A run of
    # spaces leaves its last space to the next word (\s+(?!\S)); `++` is possessive (no backtracking:
    # same chunks, faster), `\s++$` keeps whitespace at the very end together.
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    # GPT-4's (cl100k_base): case-insensitive contractions, one leading non-letter joins a word,
    # digits in groups of at most three, line breaks kept with the punctuation before them.
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    # GPT-4o's (o200k_base): words split at case changes (camelCase -> camel, Case), contractions
    # attached to their word, marks (accents written as separate code points) inside words.
    "gpt4o": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}
DEFAULT_PATTERN = "gpt4"


class BPETokenizer(TiktokenBackedTokenizer):
    kind = "bpe"

    def __init__(self, merges: Sequence[Sequence[int]], pattern: str, special_tokens: Sequence[str] = (ENDOFTEXT,)):
        import tiktoken

        self.merges = [(int(a), int(b)) for a, b in merges]
        self.pattern = PATTERNS.get(pattern, pattern)  # a name from PATTERNS, or the regex itself
        self.token_bytes = token_bytes_from_merges(self.merges)
        self.ranks = {token: rank for rank, token in enumerate(self.token_bytes)}
        if len(self.ranks) != len(self.token_bytes):
            raise GptkitError("BPE tokenizer: two merges make the same token (corrupted tokenizer spec?)")
        if len(set(special_tokens)) != len(special_tokens):
            raise GptkitError("BPE tokenizer: its special tokens have duplicates (corrupted tokenizer spec?)")
        first_special = len(self.token_bytes)
        try:
            self.encoding = tiktoken.Encoding(
                name=f"gptkit-bpe-{len(self.token_bytes)}",
                pat_str=self.pattern,
                mergeable_ranks=self.ranks,
                special_tokens={s: first_special + i for i, s in enumerate(special_tokens)},
            )
        except ValueError as e:  # tiktoken's regex engine (Rust's fancy-regex) refused the pattern
            raise GptkitError(f"tiktoken cannot use the BPE pattern ({str(e)[:100]})") from None

    @classmethod
    def train(
        cls,
        text: str | Iterable[str],
        vocab_size: int,
        pattern: str = DEFAULT_PATTERN,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
    ) -> "BPETokenizer":
        """Learn a vocabulary of `vocab_size` ids (bytes + merges + specials) from a corpus: a string,
        or an iterable of pieces of it (cut between chunks, e.g. at line ends)."""
        num_merges = vocab_size - 256 - len(special_tokens)
        if num_merges < 0:
            raise GptkitError(
                f"a byte-level BPE vocabulary needs at least {256 + len(special_tokens)} ids "
                f"(256 bytes + {len(special_tokens)} special), not {vocab_size}"
            )
        regex = PATTERNS.get(pattern, pattern)
        chunk_counts = count_chunks([text] if isinstance(text, str) else text, regex)
        return cls(learn_merges(chunk_counts, num_merges), regex, special_tokens)

    @property
    def name(self) -> str:
        return f"bpe:{self.vocab_size}"

    @property
    def pattern_name(self) -> str:
        """`gpt2`, `gpt4` or `gpt4o` when the pattern is one of PATTERNS, else `custom`."""
        return next((name for name, regex in PATTERNS.items() if regex == self.pattern), "custom")

    def spec(self) -> dict:
        specials = sorted(self.special_tokens, key=self.special_tokens.get)
        return {"kind": self.kind, "pattern": self.pattern, "merges": [list(m) for m in self.merges], "special_tokens": specials}

    def encode_reference(self, text: str) -> list[int]:
        """Plain-Python encoding that gives exactly the ids tiktoken gives (slowly)."""
        return encode_reference(text, self.ranks, self.pattern)


def token_bytes_from_merges(merges: Sequence[tuple[int, int]]) -> list[bytes]:
    """The byte string of every token: the 256 bytes, then one concatenation per merge."""
    token_bytes = [bytes([b]) for b in range(256)]
    for i, (a, b) in enumerate(merges):
        if not (0 <= a < len(token_bytes) and 0 <= b < len(token_bytes)):
            raise GptkitError(f"BPE merge {i} refers to token {max(a, b)}, not made yet (corrupted tokenizer spec?)")
        token_bytes.append(token_bytes[a] + token_bytes[b])
    return token_bytes


# ---------------------------------------------------------------------------------------------------
# The reference encoder


def encode_chunk_reference(chunk: bytes, ranks: dict[bytes, int]) -> list[int]:
    """BPE-encode one chunk the way tiktoken does: while some adjacent pair of parts joins into a
    token, join the pair whose token has the lowest rank (was learned first; leftmost on ties)."""
    if chunk in ranks:  # tiktoken's shortcut: a chunk that is a whole token is that token
        return [ranks[chunk]]
    parts = [bytes([b]) for b in chunk]
    while len(parts) > 1:
        candidates = [(ranks.get(parts[i] + parts[i + 1]), i) for i in range(len(parts) - 1)]
        rank, i = min(((r, i) for r, i in candidates if r is not None), default=(None, None))
        if rank is None:
            break  # no pair joins into a token: done
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[part] for part in parts]


def encode_reference(text: str, ranks: dict[bytes, int], pattern: str) -> list[int]:
    """Split `text` into chunks with the regex, then BPE-encode each chunk's UTF-8 bytes."""
    import regex

    ids: list[int] = []
    for chunk in regex.findall(pattern, text):
        ids.extend(encode_chunk_reference(chunk.encode("utf-8"), ranks))
    return ids
