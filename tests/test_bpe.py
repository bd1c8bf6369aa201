"""gptkit's byte-level BPE: the trainer, the tiktoken-backed encoder, the reference encoder, specs."""

from __future__ import annotations

import heapq
import json
from collections import Counter

import pytest
from tokenizer_fixtures import TRICKY_TEXTS, shakespeare, small_bpe, training_corpus

from gptkit.errors import GptkitError
from gptkit.tokenizers import ENDOFTEXT, BPETokenizer, build_tokenizer, load_tokenizer, tokenizer_from_spec
from gptkit.tokenizers.bpe import PATTERNS, encode_chunk_reference
from gptkit.tokenizers.bpe_train import BPETrainer, count_chunks, learn_merges, merge_pair
from gptkit.tokenizers.streaming import iter_pieces

# ---------------------------------------------------------------------------------------------------
# the trainer


def test_merges_of_a_worked_example():
    # "aaabdaaabac" is one chunk. Pairs: aa x4, ab x2, bd, da, ba, ac -> merge (a, a) = 256.
    # Then Z a b d Z a b a c (Z = "aa"): (Z, a) and (a, b) both occur twice; ties go to the smaller
    # pair, (97, 98) = "ab" = 257. Then Z Y d Z Y a c (Y = "ab"): (Z, Y) twice -> 258 = "aaab".
    trainer = BPETrainer(count_chunks(["aaabdaaabac"], PATTERNS["gpt4"]))
    assert trainer.train(3) == [(97, 97), (97, 98), (256, 257)]
    assert trainer.token_bytes[256:] == [b"aa", b"ab", b"aaab"]
    assert trainer.chunks == [[258, 100, 258, 97, 99]]


def test_merge_pair_is_left_to_right_and_non_overlapping():
    assert merge_pair([1, 1, 1, 2, 1, 1], (1, 1), 9) == [9, 1, 2, 9]
    assert merge_pair([1, 2, 3], (2, 1), 9) == [1, 2, 3]


def naive_merges(chunk_counts: Counter, num_merges: int) -> list[tuple[int, int]]:
    """Textbook BPE: recount every pair of every chunk before each merge (same tie rule and same
    reuse of ids for byte strings that already exist)."""
    chunks = {chunk: list(chunk.encode()) for chunk in chunk_counts}
    token_bytes = [bytes([b]) for b in range(256)]
    merges = []
    while len(merges) < num_merges:
        pairs = Counter()
        for chunk, ids in chunks.items():
            for pair in zip(ids, ids[1:]):
                pairs[pair] += chunk_counts[chunk]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merged = token_bytes[best[0]] + token_bytes[best[1]]
        if merged in token_bytes:
            new_id = token_bytes.index(merged)
        else:
            new_id = len(token_bytes)
            token_bytes.append(merged)
            merges.append(best)
        chunks = {chunk: merge_pair(ids, best, new_id) for chunk, ids in chunks.items()}
    return merges


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", "gpt4o"])
def test_incremental_trainer_matches_recounting_from_scratch(pattern):
    counts = count_chunks([training_corpus()[:15_000] + TRICKY_TEXTS["mixed"]], PATTERNS[pattern])
    assert learn_merges(counts, 120) == naive_merges(counts, 120)


def test_a_pair_whose_bytes_exist_reuses_the_token():
    # "abc" made first as ("ab", "c"), then met again as ("a", "bc"): no second token for it.
    trainer = BPETrainer({"abc": 1, "ab": 1})
    bc = trainer.merge((98, 99))  # chunk "abc" -> a, bc
    ab = trainer.merge((97, 98))  # chunk "ab"  -> ab
    abc = trainer.merge((ab, 99))  # no chunk has ab, c: registers b"abc"
    assert trainer.merge((97, bc)) == abc
    assert trainer.merges == [(98, 99), (97, 98), (ab, 99)]
    assert trainer.chunks[0] == [abc]


def test_stale_heap_entries_are_skipped():
    trainer = BPETrainer({"abab": 3, "ba": 1})
    heapq.heappush(trainer.heap, (-100, (1, 2)))  # a pair that does not exist: stale
    assert trainer.best_pair() == (97, 98)


def test_vocab_size_and_ids():
    tok = small_bpe()
    assert tok.vocab_size == 600
    assert len(tok.merges) == 600 - 256 - 1
    assert tok.eot_id == 599 and tok.special_tokens == {ENDOFTEXT: 599}
    assert tok.name == "bpe:600"
    # merges are learned on the corpus: " the" is among them, and multi-byte characters too
    assert tok.encode(" the") == [tok.ranks[b" the"]]
    assert any(len(t.decode("utf-8", errors="ignore")) < len(t) and len(t) >= 2 for t in tok.token_bytes[256:])


def test_a_small_corpus_gives_a_smaller_vocabulary():
    tok = BPETokenizer.train("ab ab ab", vocab_size=1000)
    assert tok.vocab_size < 1000
    assert tok.decode(tok.encode("ab ab")) == "ab ab"


def test_too_small_a_vocabulary_is_refused():
    with pytest.raises(GptkitError, match="at least 257"):
        BPETokenizer.train("hello", vocab_size=100)


def test_training_on_clean_pieces_equals_training_on_the_whole():
    text = training_corpus()[:50_000]
    pieces = list(iter_pieces([text], piece_chars=2000))
    assert len(pieces) > 20
    assert BPETokenizer.train(pieces, 400).merges == BPETokenizer.train(text, 400).merges


def test_bpe_on_tiny_shakespeare_compresses():
    text = shakespeare()
    tok = small_bpe()
    ids = tok.encode(text)
    assert len(text.encode()) / len(ids) > 2.0  # bytes per token (1.0 with bytes alone), 343 merges
    assert tok.decode(ids) == text


# ---------------------------------------------------------------------------------------------------
# encoding


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", "gpt4o"])
@pytest.mark.parametrize("name", sorted(TRICKY_TEXTS))
def test_tricky_texts_round_trip_and_match_the_reference(pattern, name):
    tok = small_bpe(pattern)
    text = TRICKY_TEXTS[name]
    ids = tok.encode(text)
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert tok.decode(ids) == text
    assert tok.encode_reference(text) == ids


def test_reference_encoder_matches_tiktoken_on_shakespeare():
    tok = small_bpe()
    text = shakespeare()[200_000:260_000]
    assert tok.encode_reference(text) == tok.encode(text)


def test_reference_chunk_encoder_merges_lowest_rank_first():
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"bc": 256, b"ab": 257, b"abc": 258})
    assert encode_chunk_reference(b"abcd", ranks) == [258, ord("d")]  # b+c first, then a+bc = abc
    assert encode_chunk_reference(b"abc", ranks) == [258]  # a whole-token chunk
    assert encode_chunk_reference(b"xy", ranks) == [ord("x"), ord("y")]


def test_special_tokens_are_text_unless_allowed():
    tok = small_bpe()
    text = f"one{ENDOFTEXT}two"
    plain = tok.encode(text)
    assert tok.eot_id not in plain and tok.decode(plain) == text
    special = tok.encode(text, allowed_special="all")
    assert special == tok.encode("one") + [tok.eot_id] + tok.encode("two")
    assert tok.encode(text, allowed_special=[ENDOFTEXT]) == special
    assert tok.decode(special) == text
    with pytest.raises(GptkitError, match="not a special token"):
        tok.encode(text, allowed_special=["<|nope|>"])


def test_extra_special_tokens_follow_the_merges():
    tok = BPETokenizer.train(training_corpus()[:20_000], 300, special_tokens=[ENDOFTEXT, "<|user|>"])
    assert tok.special_tokens == {ENDOFTEXT: 298, "<|user|>": 299}
    assert tok.encode("<|user|>hi", allowed_special="all")[0] == 299
    assert tokenizer_from_spec(json.loads(json.dumps(tok.spec()))).special_tokens == tok.special_tokens


def test_decoding_an_unknown_id_is_a_clear_error():
    tok = small_bpe()
    with pytest.raises(GptkitError, match="outside the bpe:600 vocabulary"):
        tok.decode([1, 600])


# ---------------------------------------------------------------------------------------------------
# specs


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", "gpt4o"])
def test_spec_rebuilds_the_same_tokenizer(pattern, tmp_path):
    tok = small_bpe(pattern)
    spec = json.loads(json.dumps(tok.spec()))  # as stored in meta.json or checkpoint metadata
    assert spec["pattern"] == PATTERNS[pattern]
    again = tokenizer_from_spec(spec)
    assert again.spec() == tok.spec()
    text = TRICKY_TEXTS["mixed"] + shakespeare()[:5000]
    assert again.encode(text) == tok.encode(text)

    tok.save(tmp_path)
    saved = (tmp_path / "tokenizer.json").read_text()
    assert json.loads(saved) == tok.spec()
    assert load_tokenizer(tmp_path).spec() == tok.spec()
    assert build_tokenizer(str(tmp_path)).spec() == tok.spec()


def test_saved_merges_are_one_per_line(tmp_path):
    small_bpe().save(tmp_path)
    lines = (tmp_path / "tokenizer.json").read_text().splitlines()
    assert sum(1 for line in lines if line.strip().startswith("[") and line.strip().rstrip(",").endswith("]")) == 343


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s["merges"].append([5000, 1]), "not made yet"),
        (lambda s: s["merges"].append(s["merges"][0]), "same token"),
        (lambda s: s["merges"].append([1]), "pairs of ids"),
        (lambda s: s.pop("pattern"), "lacks a valid 'pattern'"),
    ],
)
def test_damaged_specs_are_refused(damage, message):
    spec = json.loads(json.dumps(small_bpe().spec()))
    damage(spec)
    with pytest.raises(GptkitError, match=message):
        tokenizer_from_spec(spec)


def test_an_invalid_pattern_is_a_clear_error():
    with pytest.raises(GptkitError, match="not a valid regex"):
        BPETokenizer.train("hello", 300, pattern="([")
