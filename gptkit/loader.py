"""Training batches from memory-mapped token shards.

A training example is a window of T + 1 consecutive tokens of one shard: the model reads the first T
and predicts the last T (each token's successor). Three samplers choose the windows:

    random     (the default) every micro-batch picks window starts uniformly at random, with
               replacement (nanoGPT's get_batch). Windows overlap and some text is seen twice before
               other text is seen once. Cheap and stateless apart from its random generator.
    epoch      shuffled without replacement: an epoch is every window of T + 1 tokens at a stride of
               T (so each token is predicted once per epoch), visited in a random order. The order
               and a random phase (where the stride grid starts, so epochs cut the text at different
               places) come from (seed, epoch) alone, so the position in the run is two integers.
               docs/performance.md compares it with `random`.
    documents  like epoch, but every window starts at the beginning of a document (right after an
               <|endoftext|> token, or at a shard's start), and long documents continue in further
               windows T tokens apart; the model then always sees a document's opening with its start.

Distributed training (torchrun) splits each micro-batch across ranks: the sampler draws the global
micro-batch of `batch_size * world_size` windows, the same on every rank, and rank r keeps rows
[r * batch_size, (r + 1) * batch_size). Ranks therefore read disjoint data, and together they train on
exactly the windows one process with `batch_size * world_size` would, which is what makes a 2-process
run reproduce a 1-process run and a checkpoint resumable with any number of processes.

    loader = make_loader("epoch", split, batch_size=12, block_size=64, seed=1337)
    x, y = loader.next_batch()            # (12, 64) int64 tensors on the CPU
    position = loader.state_dict()        # where it is: part of the resume state (train_state.py)
    loader.load_state_dict(position)
"""

from __future__ import annotations

import numpy as np
import torch

from gptkit.errors import GptkitError
from gptkit.shards import Split

SAMPLERS = ("random", "epoch", "documents")


def _windows(split: Split, shard_ids: np.ndarray, offsets: np.ndarray, block_size: int, pin: bool):
    """Read the windows tokens[o : o + T + 1] of the given shards into x (B, T) and y (B, T)."""
    rows = np.stack([split.shards[s][o : o + block_size + 1] for s, o in zip(shard_ids, offsets)])
    split.check_ids(rows, shard_ids, offsets)  # a damaged shard stops here, named, before any step uses it
    windows = torch.from_numpy(rows.astype(np.int64))
    x, y = windows[:, :-1], windows[:, 1:]
    if pin:  # page-locked (and contiguous) memory: the copy to the GPU then runs asynchronously (non_blocking=True)
        x, y = x.contiguous().pin_memory(), y.contiguous().pin_memory()
    return x, y


class RandomBatches:
    """Windows at uniformly random start positions, drawn with replacement (the `random` sampler)."""

    def __init__(self, split: Split, batch_size: int, block_size: int, seed: int, rank: int = 0, world_size: int = 1, pin_memory: bool = False):
        self.split, self.batch_size, self.block_size = split, batch_size, block_size
        self.rank, self.world_size, self.pin_memory = rank, world_size, pin_memory
        self.generator = torch.Generator().manual_seed(seed)
        # A shard of n tokens has n - T start positions whose window (T + 1 tokens) fits.
        self.starts_per_shard = np.array([max(len(s) - block_size, 0) for s in split.shards])
        self.cumulative = np.cumsum(self.starts_per_shard)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        total = self.batch_size * self.world_size
        picks = torch.randint(int(self.cumulative[-1]), (total,), generator=self.generator).numpy()
        picks = picks[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]  # this rank's rows
        shard_ids = np.searchsorted(self.cumulative, picks, side="right")  # the shard each pick falls in
        offsets = picks - (self.cumulative[shard_ids] - self.starts_per_shard[shard_ids])
        return _windows(self.split, shard_ids, offsets, self.block_size, self.pin_memory)

    # The generator's state is the sampler's whole position (on disk, the resume file's "batches" RNG).
    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "generator" in state:  # absent when the run was started with an epoch sampler
            self.generator.set_state(state["generator"])


class EpochBatches:
    """Every window once per epoch, in a shuffled order (the `epoch` and `documents` samplers)."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        block_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
        eot_id: int | None = None,
    ):
        self.split, self.batch_size, self.block_size = split, batch_size, block_size
        self.rank, self.world_size, self.pin_memory = rank, world_size, pin_memory
        self.seed, self.eot_id = seed, eot_id
        # Windows are numbered by their start in the split seen as one stream: shard k's tokens come
        # after those of shards 0..k-1. `shard_begin` maps a stream position back to (shard, offset).
        lengths = np.array([len(s) for s in split.shards], dtype=np.int64)
        self.shard_begin = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.document_starts = self._document_starts() if eot_id is not None else None
        self.epoch, self.position = 0, 0  # the next window is number `position` of epoch `epoch`'s order
        self._cached_epoch, self._order = -1, np.zeros(0, dtype=np.int64)
        if len(self._starts(np.random.default_rng([seed, 0]))) == 0:
            raise GptkitError(
                f"the {split.name} split has no window of {block_size + 1} tokens",
                hint="use more text or a smaller --block-size",
            )

    def _document_starts(self) -> np.ndarray:
        """Stream positions of every window start in `documents` mode (computed once: one pass over the data)."""
        T, starts = self.block_size, []
        for begin, shard in zip(self.shard_begin, self.split.shards):
            n = len(shard)
            # A document starts right after each <|endoftext|>; a shard's first token starts one too
            # (shards are cut at arbitrary places, and that text would otherwise never be seen).
            doc_begin = np.concatenate([[0], np.flatnonzero(np.asarray(shard) == self.eot_id) + 1])
            doc_end = np.concatenate([doc_begin[1:] - 1, [n]])  # the closing <|endoftext|> or the shard's end
            # Windows T apart inside each document: doc_begin + 0, T, 2T, ... while still inside it.
            counts = np.maximum((doc_end - doc_begin + T - 1) // T, 0)
            first = np.repeat(doc_begin, counts)
            step = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            local = first + step * T
            starts.append(begin + local[local + T + 1 <= n])  # only windows that fit in the shard
        return np.concatenate(starts).astype(np.int64)

    def _starts(self, rng: np.random.Generator) -> np.ndarray:
        """The window starts of one epoch, as stream positions, in file order."""
        if self.document_starts is not None:
            return self.document_starts
        T = self.block_size
        phase = int(rng.integers(T))  # where this epoch's stride grid starts, so epochs cut differently
        starts = [begin + np.arange(phase, len(shard) - T, T) for begin, shard in zip(self.shard_begin, self.split.shards)]
        return np.concatenate(starts).astype(np.int64)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s window starts in visiting order: a permutation drawn from (seed, epoch) alone."""
        if epoch != self._cached_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            starts = self._starts(rng)
            self._order = starts[rng.permutation(len(starts))]
            self._cached_epoch = epoch
        return self._order

    def _take(self, count: int) -> np.ndarray:
        """The next `count` windows of the global order (crossing into the next epoch if need be)."""
        taken = []
        while count > 0:
            order = self._epoch_order(self.epoch)
            piece = order[self.position : self.position + count]
            taken.append(piece)
            count -= len(piece)
            self.position += len(piece)
            if self.position >= len(order):
                self.epoch, self.position = self.epoch + 1, 0
        return np.concatenate(taken)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self._take(self.batch_size * self.world_size)
        starts = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]  # this rank's rows
        shard_ids = np.searchsorted(self.shard_begin, starts, side="right") - 1
        return _windows(self.split, shard_ids, starts - self.shard_begin[shard_ids], self.block_size, self.pin_memory)

    # The position is two integers (on disk, the resume file's JSON "loader").
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if "epoch" in state:  # absent when the run was started with the random sampler: start at the beginning
            self.epoch, self.position = int(state["epoch"]), int(state["position"])


def make_loader(
    sampler: str,
    split: Split,
    batch_size: int,
    block_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    eot_id: int | None = None,
):
    """The batch loader for TrainConfig.sampler: random | epoch | documents (which needs `eot_id`)."""
    if sampler == "random":
        return RandomBatches(split, batch_size, block_size, seed, rank, world_size, pin_memory)
    if sampler == "epoch":
        return EpochBatches(split, batch_size, block_size, seed, rank, world_size, pin_memory)
    if sampler == "documents":
        if eot_id is None:
            raise GptkitError(
                "sampler documents needs an <|endoftext|> token, and this data's tokenizer has none (meta.json eot_id)",
                hint="use --sampler epoch",
            )
        return EpochBatches(split, batch_size, block_size, seed, rank, world_size, pin_memory, eot_id)
    raise ValueError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
