"""Learning BPE merges from a corpus: the training half of gptkit's byte-level BPE (see bpe.py).

Byte-pair encoding starts from the 256 bytes and repeats one step: find the pair of adjacent tokens
that occurs most often in the corpus, and make it a new token. After N steps the vocabulary has
256 + N tokens and the ordered list of N merges *is* the tokenizer.

The text is first cut into chunks by a regex (words, numbers, punctuation runs, whitespace, the way
GPT-2 and GPT-4 do it), and merges never cross a chunk boundary, so " the" can become one token but
"the." cannot. Two things make training fast without hiding the idea:

1. Words repeat. Tiny Shakespeare's 263,000 chunks are only 15,000 distinct strings, so we keep each
   distinct chunk once, as a list of token ids, with its count ("weighted by frequency").
2. A merge changes few chunks. Instead of recounting every pair after each merge, we keep
     pair_counts[pair]   how often the pair occurs, summed over chunks (times their count)
     pair_chunks[pair]   which chunks contain it (a superset: stale entries are harmless)
     heap                (-count, pair) entries: the most frequent pair is on top
   and after merging we update only the counts of pairs in the chunks that changed. The heap is
   "lazy": an updated count is pushed as a new entry; an entry that no longer matches its pair's
   count is skipped when it reaches the top.

One merge step, as BPETrainer.merge does it, for the pair (a, b) -> new token n:

    for each chunk c that contains a b:
        old = c.ids                       e.g. [t, h, e, _]  with (a, b) = (h, e)
        new = old with every "a b" -> n        [t, n, _]
        for each adjacent pair in old: pair_counts -= count(c)    (t,h) (h,e) (e,_)
        for each adjacent pair in new: pair_counts += count(c)    (t,n) (n,_)
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

from gptkit.errors import GptkitError

Pair = tuple[int, int]


def count_chunks(texts: Iterable[str], pattern: str) -> Counter[str]:
    """How often each regex chunk occurs in the texts (pieces of one corpus, or several documents)."""
    import regex  # the `regex` module: \p{L} classes and possessive quantifiers, which `re` lacks

    try:
        splitter = regex.compile(pattern)
    except regex.error as e:
        raise GptkitError(f"the BPE pattern is not a valid regex ({e})", hint="use gpt4, gpt4o, gpt2 or a valid regex") from None
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(splitter.findall(text))
    return counts


def merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids`, left to right, by `new_id`."""
    a, b = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETrainer:
    """Learns merges from chunk counts. `token_bytes[i]` is the byte string token i stands for."""

    def __init__(self, chunk_counts: Mapping[str, int]):
        self.chunks = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # ids start as bytes
        self.counts = list(chunk_counts.values())
        self.token_bytes = [bytes([b]) for b in range(256)]
        self.id_of_bytes = {t: i for i, t in enumerate(self.token_bytes)}
        self.merges: list[Pair] = []

        self.pair_counts: Counter[Pair] = Counter()
        self.pair_chunks: defaultdict[Pair, set[int]] = defaultdict(set)
        for c, (ids, count) in enumerate(zip(self.chunks, self.counts)):
            for pair in zip(ids, ids[1:]):
                self.pair_counts[pair] += count
                self.pair_chunks[pair].add(c)
        # Ties go to the smallest pair, so training is deterministic.
        self.heap = [(-count, pair) for pair, count in self.pair_counts.items()]
        heapq.heapify(self.heap)

    def best_pair(self) -> Pair | None:
        """The most frequent pair, or None when no chunk has two tokens left."""
        while self.heap:
            neg_count, pair = self.heap[0]
            if self.pair_counts.get(pair) == -neg_count:
                return pair
            heapq.heappop(self.heap)  # stale: the pair's count changed after this entry was pushed
        return None

    def merge(self, pair: Pair) -> int:
        """Merge `pair` everywhere; returns the id of the token it became."""
        a, b = pair
        merged = self.token_bytes[a] + self.token_bytes[b]
        new_id = self.id_of_bytes.get(merged)
        if new_id is None:
            new_id = len(self.token_bytes)
            self.token_bytes.append(merged)
            self.id_of_bytes[merged] = new_id
            self.merges.append(pair)
        # else: the same bytes were already made by another pair (say "a"+"bc" after "ab"+"c"). Token
        # bytes must stay unique (tiktoken ranks tokens by their bytes), so reuse the id: the encoder
        # makes this merge anyway whenever "a" meets "bc", since "abc" has a rank.

        delta: Counter[Pair] = Counter()
        for c in self.pair_chunks.pop(pair, ()):
            old = self.chunks[c]
            new = merge_pair(old, pair, new_id)
            if len(new) == len(old):
                continue  # a stale entry in pair_chunks: the pair left this chunk earlier
            count = self.counts[c]
            for p in zip(old, old[1:]):
                delta[p] -= count
            for p in zip(new, new[1:]):
                delta[p] += count
                if new_id in p:
                    self.pair_chunks[p].add(c)
            self.chunks[c] = new

        for p, change in delta.items():
            if change:
                count = self.pair_counts[p] + change
                if count:
                    self.pair_counts[p] = count
                    heapq.heappush(self.heap, (-count, p))
                else:
                    del self.pair_counts[p]
        return new_id

    def train(self, num_merges: int) -> list[Pair]:
        """Learn up to `num_merges` new tokens (fewer if the corpus runs out of pairs)."""
        while len(self.merges) < num_merges:
            pair = self.best_pair()
            if pair is None:
                break
            self.merge(pair)
        return self.merges


def learn_merges(chunk_counts: Mapping[str, int], num_merges: int) -> list[Pair]:
    """The first `num_merges` BPE merges of a corpus given as chunk -> count."""
    return BPETrainer(chunk_counts).train(num_merges)
