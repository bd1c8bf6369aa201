"""Every gptkit tokenizer as a Hugging Face `tokenizer.json`, so `AutoTokenizer` gives gptkit's ids.

The file is built with the `tokenizers` library (what AutoTokenizer runs), one recipe per kind:

    char              BPE model with no merges: each character is looked up alone; `<unk>` when the
                      tokenizer has one (a char tokenizer without <unk> drops unseen characters, where
                      gptkit refuses them). No pre-tokenizer; the decoder fuses tokens with no spaces.
    bpe, tiktoken,    byte-level BPE: the split regex (Split, "isolated"), then GPT-2's byte-to-unicode
    hf-bpe            map (ByteLevel without its own regex). Merges: see byte_level_vocab_and_merges.
    sentencepiece     the same model (BPE or Unigram) over characters, spaces written as "▁", byte
                      fallback <0x..> for characters without a piece (as gptkit trains it: no
                      normalisation, no dummy prefix).

Special tokens keep gptkit's ids. They are HF "special" added tokens, so AutoTokenizer turns their text
(e.g. "<|endoftext|>") into the id, where gptkit's `encode` keeps it plain text unless allowed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gptkit.errors import GptkitError
from gptkit.tokenizers.hf_gpt2 import bytes_to_unicode  # GPT-2's byte -> character map, one copy


def require_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise GptkitError(
            "exporting a tokenizer needs the `tokenizers` library", hint="pip install 'gptkit[export]'"
        ) from None
    return tokenizers


def byte_string(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def byte_level_vocab_and_merges(tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A tiktoken-backed tokenizer's ranks (token bytes -> id) as a BPE vocabulary and merge list.

    tiktoken (which runs gptkit's BPE and OpenAI's encodings) repeatedly joins the adjacent pair whose
    *joined token* has the lowest rank; a merge-list BPE (Hugging Face, llama.cpp) joins the pair listed
    first. gptkit's BPE knows the merges it learned, in order: each was learned on text already split by
    the earlier ones, so listing them in that order is exact (and is what GPT-2's merges.txt does).
    OpenAI's encodings ship ranks only. Then every way of cutting a token into two tokens is listed, ordered
    by the joined token's rank: whichever pair shows up, it merges at the rank tiktoken gives it (as
    transformers' TikTokenConverter does).
    """
    ranks = tokenizer.encoding._mergeable_ranks
    vocab = {byte_string(token): rank for token, rank in ranks.items()}
    learned = getattr(tokenizer, "merges", None)  # gptkit's BPE: [(left id, right id), ...] in learned order
    if learned is not None:
        token_bytes = tokenizer.token_bytes
        return vocab, [(byte_string(token_bytes[a]), byte_string(token_bytes[b])) for a, b in learned]
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        cuts = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        # Within one token, the cut with the earlier-learned halves first (a tie tiktoken never meets).
        for left, right in sorted(cuts, key=lambda cut: (ranks[cut[0]], ranks[cut[1]])):
            merges.append((byte_string(left), byte_string(right)))
    return vocab, merges


_BOUNDED_POSSESSIVE = re.compile(r"\{\d+(?:,\d*)?\}\+")


def _depth_at(pattern: str, index: int) -> int:
    """Group nesting depth at `index` of a regex (escapes and character classes skipped)."""
    depth, i, in_class = 0, 0, False
    while i < index:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        i += 1
    return depth


def oniguruma_pattern(pattern: str) -> str:
    """A tiktoken split regex as Hugging Face's engine must read it to cut the same chunks.

    `X{n,m}+` is possessive in tiktoken's engine but "X{n,m}, one or more times" in Oniguruma (Hugging
    Face tokenizers'; cl100k_base's `\\p{N}{1,3}+` would take "2024" whole). At the end of a top-level
    alternative nothing follows the quantifier, so greedy and possessive match the same: there it becomes
    `X{n,m}`. Anywhere else the two engines could disagree, and the pattern is refused."""
    out, last = [], 0
    for match in _BOUNDED_POSSESSIVE.finditer(pattern):
        end = match.end()
        if _depth_at(pattern, match.start()) != 0 or not (end == len(pattern) or pattern[end] == "|"):
            raise GptkitError(
                "the tokenizer's split pattern has a possessive {n,m}+ that Hugging Face tokenizers would read "
                "as a repetition: its tokenizer.json would cut other chunks",
                hint="use a pattern with {n,m}+ only at the end of a top-level alternative (gpt2, gpt4 and gpt4o export)",
            )
        out.append(pattern[last : end - 1])  # drop the "+"
        last = end
    return "".join(out) + pattern[last:]


def hf_tokenizer(tokenizer):
    """A `tokenizers.Tokenizer` that encodes as the gptkit `tokenizer` does."""
    from gptkit.tokenizers.tiktoken_backed import TiktokenBackedTokenizer

    kind = tokenizer.kind
    if kind == "char":
        backend = _char_backend(tokenizer)
    elif isinstance(tokenizer, TiktokenBackedTokenizer):  # bpe, tiktoken, hf-bpe (imported from a HF folder)
        backend = _byte_level_backend(tokenizer)
    elif kind == "sentencepiece":
        backend = _sentencepiece_backend(tokenizer)
    else:
        raise GptkitError(f"no Hugging Face tokenizer recipe for gptkit's {kind!r} tokenizer")
    _add_specials(backend, tokenizer.special_tokens)
    return backend


def _add_specials(backend, specials: dict[str, int]) -> None:
    from tokenizers import AddedToken

    backend.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in sorted(specials, key=specials.get)])
    for text, token_id in specials.items():  # they were put in the vocabulary with gptkit's ids
        if backend.token_to_id(text) != token_id:
            raise GptkitError(f"special token {text!r} would get id {backend.token_to_id(text)}, not gptkit's {token_id}")


def _char_backend(tokenizer):
    tokenizers = require_tokenizers()
    vocab = {ch: i for i, ch in enumerate(tokenizer.chars)}
    vocab.update(tokenizer.special_tokens)
    unk = "<unk>" if tokenizer.unk else None
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[], unk_token=unk, fuse_unk=False))
    backend.decoder = tokenizers.decoders.Fuse()  # without a decoder, decode joins tokens with spaces
    return backend


def _byte_level_backend(tokenizer):
    """From the tokenizer's tiktoken.Encoding: its ranks, its split regex and its special tokens."""
    tokenizers = require_tokenizers()
    from tokenizers import Regex, decoders, models, pre_tokenizers

    from gptkit.tokenizers.bpe import PATTERNS
    from gptkit.tokenizers.hf_gpt2 import GPT2_REGEX

    encoding = tokenizer.encoding
    vocab, merges = byte_level_vocab_and_merges(tokenizer)
    vocab.update(encoding._special_tokens)  # gptkit's ids for them, not the next free ones
    # ignore_merges: a chunk that is a whole token becomes that token at once, tiktoken's shortcut.
    model = models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False, byte_fallback=False)
    backend = tokenizers.Tokenizer(model)
    if encoding._pat_str in (PATTERNS["gpt2"], GPT2_REGEX):
        # GPT-2's regex is ByteLevel's built-in one: the standard GPT-2 tokenizer.json, which other tools
        # (gptkit's own hf_import among them) recognise.
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        try:
            split = pre_tokenizers.Split(Regex(oniguruma_pattern(encoding._pat_str)), behavior="isolated", invert=False)
        except Exception as e:  # the Oniguruma engine refused the regex tiktoken accepted
            raise GptkitError(f"the tokenizer's split pattern does not compile for Hugging Face tokenizers: {e}") from None
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_backend(tokenizer):
    """SentencePiece's pieces and scores, read through its processor (no protobuf parsing needed)."""
    tokenizers = require_tokenizers()
    from tokenizers import decoders, models, normalizers

    sp = tokenizer.sp
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    if tokenizer.model_type == "unigram":
        # Viterbi over the pieces' log-probabilities; an unknown character costs min score - 10 in both.
        model = models.Unigram([(p, sp.get_score(i)) for i, p in enumerate(pieces)], unk_id=sp.unk_id(), byte_fallback=True)
    else:
        # SentencePiece BPE joins the adjacent pair whose joined piece scores highest: the same "all
        # cuts, ordered by the joined piece" list as byte-level BPE, with score order for rank order.
        normal = {p: i for i, p in enumerate(pieces) if sp.is_unknown(i) or not (sp.is_control(i) or sp.is_byte(i) or sp.is_unused(i))}
        order = sorted((i for p, i in normal.items() if not sp.is_unknown(i)), key=lambda i: (-sp.get_score(i), i))
        merges = []
        for i in order:
            piece = pieces[i]
            cuts = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in normal and piece[k:] in normal]
            merges += sorted(cuts, key=lambda cut: (-sp.get_score(normal[cut[0]]), -sp.get_score(normal[cut[1]])))
        vocab = {p: i for i, p in enumerate(pieces)}
        model = models.BPE(vocab=vocab, merges=merges, unk_token=pieces[sp.unk_id()], byte_fallback=True, fuse_unk=True)
    backend = tokenizers.Tokenizer(model)
    # No pre-tokenizer: SentencePiece sees the whole text at once; a space is the piece character "▁".
    backend.normalizer = normalizers.Replace(" ", "\u2581")
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    return backend


def write_tokenizer_files(tokenizer, folder: Path, model_max_length: int) -> list[Path]:
    """tokenizer.json and tokenizer_config.json in `folder` (AutoTokenizer reads both)."""
    from gptkit.tokenizers.base import ENDOFTEXT

    backend = hf_tokenizer(tokenizer)
    tokenizer_json = folder / "tokenizer.json"
    backend.save(str(tokenizer_json))
    specials = tokenizer.special_tokens
    config = {
        # The generic class loads tokenizer.json as written; a model-specific class (GPT2Tokenizer) would
        # rebuild the pre-tokenizer its own way and lose a custom split pattern.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,  # decode gives the text back, spaces as they were
        "add_prefix_space": False,
        "gptkit_tokenizer": tokenizer.name,
    }
    if ENDOFTEXT in specials:
        config.update(bos_token=ENDOFTEXT, eos_token=ENDOFTEXT)
    if "<unk>" in specials:
        config["unk_token"] = "<unk>"
    tokenizer_config = folder / "tokenizer_config.json"
    tokenizer_config.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [tokenizer_json, tokenizer_config]
