"""Reading instruction data (written by instructions.py): examples -> padded rows with masked targets.

A row is one example, from its first token, right-padded to the width T (the context, or the longest
example when that is shorter: row_width):

    tokens   Question: 2+3\\nAnswer: 5\\n<eot>                      (n tokens, n <= T + 1)
    x        tokens[0 : n-1]            then pad_id   ... up to T     (B, T) int64
    y        tokens[1 : n]              then -100     ... up to T     (B, T) int64
             with y = -100 wherever tokens[1 + t] is a prompt token

-100 is F.cross_entropy's default ignore_index: those positions add nothing to the loss nor to any
gradient, so the loss is the mean over the completion tokens only. (Padding sits after the example,
and attention is causal, so it cannot change the logits of the real positions either.)

    split = InstructionSplit.open("data/tasks", "train")
    batches = InstructionBatches(split, batch_size=16, block_size=128, seed=1337)
    x, y = batches.next_batch()                      # like loader.py's loaders
    for x, y in split.iter_batches(16, 128): ...     # every example once, in order (evaluation)

InstructionBatches visits every example once per epoch in a shuffled order drawn from (seed, epoch),
like loader.EpochBatches, and splits each global micro-batch of batch_size * world_size rows across
torchrun ranks the same way, so the position in the run is two integers and a 2-process run reads
exactly the rows of a 1-process run with twice the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptkit.errors import GptkitError
from gptkit.shards import Split, read_meta

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index


def row_width(meta: dict, block_size: int) -> int:
    """The T that training and evaluation pad rows to: the model's context, or less when every example
    is shorter (meta.json "longest_example", n tokens -> n - 1 positions). Padding changes no loss and
    no gradient, so a narrower row only saves work: a task of 30-token examples for a 64-token model
    would otherwise spend half of every step on padding."""
    longest = meta.get("longest_example")
    return min(block_size, max(int(longest) - 1, 1)) if longest else block_size


def is_instruction_data(meta: dict) -> bool:
    return meta.get("kind") == "instructions"


def _load_npy(path: Path, dtype, what: str) -> np.ndarray:
    if not path.is_file():
        raise GptkitError(f"{path} is missing: the instruction data folder is incomplete", hint="run `gptkit prepare instructions` again")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise GptkitError(f"{path} is not a valid {what} ({e})", hint="run `gptkit prepare instructions` again") from None
    if array.dtype != np.dtype(dtype):
        raise GptkitError(f"{path} holds {array.dtype}, not {np.dtype(dtype)}: it is not a {what}")
    return array


@dataclass
class InstructionSplit:
    """One split of an instruction data folder: the tokens, which of them are trained, and the examples."""

    name: str
    tokens: np.ndarray  # (N_tokens,) the split's tokens, examples one after another
    trained: np.ndarray  # (N_tokens,) uint8: 1 where the token is part of a completion
    examples: np.ndarray  # (N_examples, 2) int64: start in `tokens`, length
    pad_id: int
    template: dict

    @classmethod
    def open(cls, data_dir: str | Path, name: str, meta: dict | None = None) -> "InstructionSplit":
        data_dir = Path(data_dir)
        meta = meta or read_meta(data_dir)
        if not is_instruction_data(meta):
            raise GptkitError(
                f"{data_dir} holds plain text, not instruction data",
                hint="prepare examples with `gptkit prepare instructions FILE.jsonl`",
            )
        shards = Split.open(data_dir, name, meta).shards
        # Instruction data is small (examples, not a web corpus): one array keeps every row one slice.
        tokens = np.concatenate([np.asarray(s) for s in shards]) if len(shards) > 1 else shards[0]
        info = meta["splits"][name]
        trained = _load_npy(data_dir / info["trained"], np.uint8, "loss mask")
        examples = _load_npy(data_dir / info["index"], np.int64, "example index")
        if len(trained) != len(tokens) or examples.ndim != 2 or examples.shape[1] != 2:
            raise GptkitError(f"{data_dir}: the {name} index or mask does not match its tokens", hint="run `gptkit prepare instructions` again")
        if len(examples) and int((examples[:, 0] + examples[:, 1]).max()) > len(tokens):
            raise GptkitError(f"{data_dir}: the {name} example index points past its tokens", hint="run `gptkit prepare instructions` again")
        eot = meta.get("eot_id")
        return cls(name, tokens, trained, np.asarray(examples), int(eot) if eot is not None else 0, meta.get("template") or {})

    def __len__(self) -> int:
        return len(self.examples)

    def check_fits(self, block_size: int) -> None:
        """Refuse a context shorter than the longest example (they were sized at prepare's --block-size)."""
        lengths = self.examples[:, 1]
        too_long = int((lengths > block_size + 1).sum())
        if too_long:
            raise GptkitError(
                f"{too_long:,} of the {len(lengths):,} {self.name} examples are longer than the context of {block_size} "
                f"tokens (+1); the longest has {int(lengths.max()):,}",
                hint=f"prepare the data again with --block-size {block_size}, which skips them",
            )

    def rows(self, example_ids, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y (len(example_ids), T) int64 for the given examples; see the module docstring."""
        T = block_size
        x = np.full((len(example_ids), T), self.pad_id, dtype=np.int64)
        y = np.full((len(example_ids), T), IGNORE_INDEX, dtype=np.int64)
        for row, e in enumerate(example_ids):
            start, length = (int(v) for v in self.examples[e])
            n = min(length, T + 1) - 1  # the model reads n tokens and predicts their n successors
            tokens = np.asarray(self.tokens[start : start + n + 1], dtype=np.int64)
            keep = np.asarray(self.trained[start + 1 : start + n + 1], dtype=bool)
            x[row, :n] = tokens[:n]
            y[row, :n] = np.where(keep, tokens[1:], IGNORE_INDEX)
        return torch.from_numpy(x), torch.from_numpy(y)

    def iter_batches(self, batch_size: int, block_size: int, max_batches: int | None = None):
        """Every example once, in file order, `batch_size` rows at a time (the last batch may be smaller):
        a deterministic validation loss. Yields (x, y) as `rows`."""
        for produced, begin in enumerate(range(0, len(self), batch_size)):
            if max_batches is not None and produced >= max_batches:
                return
            yield self.rows(range(begin, min(begin + batch_size, len(self))), block_size)


class InstructionBatches:
    """Shuffled epochs over the examples of a split, one example per row (the training batches)."""

    def __init__(self, split: InstructionSplit, batch_size: int, block_size: int, seed: int, rank: int = 0, world_size: int = 1, pin_memory: bool = False):
        if len(split) == 0:
            raise GptkitError(f"the {split.name} split has no examples", hint="use more examples or a smaller --val-fraction")
        split.check_fits(block_size)
        self.split, self.batch_size, self.block_size, self.seed = split, batch_size, block_size, seed
        self.rank, self.world_size, self.pin_memory = rank, world_size, pin_memory
        self.epoch, self.position = 0, 0  # the next row is example number `position` of epoch `epoch`'s order
        self._cached_epoch, self._order = -1, np.zeros(0, dtype=np.int64)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._cached_epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.split))
            self._cached_epoch = epoch
        return self._order

    def _take(self, count: int) -> np.ndarray:
        taken = []
        while count > 0:
            piece = self._epoch_order(self.epoch)[self.position : self.position + count]
            taken.append(piece)
            count -= len(piece)
            self.position += len(piece)
            if self.position >= len(self.split):
                self.epoch, self.position = self.epoch + 1, 0
        return np.concatenate(taken)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        examples = self._take(self.batch_size * self.world_size)
        x, y = self.split.rows(examples[self.rank * self.batch_size : (self.rank + 1) * self.batch_size], self.block_size)
        if self.pin_memory:
            x, y = x.pin_memory(), y.pin_memory()
        return x, y

    # As loader.EpochBatches: the position is two integers in the resume file's JSON.
    def save_state(self, rng: dict, extra: dict) -> None:
        extra["loader"] = {"epoch": self.epoch, "position": self.position}

    def load_state(self, rng: dict, extra: dict) -> None:
        state = extra.get("loader")
        if state:
            self.epoch, self.position = int(state["epoch"]), int(state["position"])
