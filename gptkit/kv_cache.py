"""The key/value cache of generation, and the attention mask built from positions.

Generating token n needs the keys and values of tokens 0..n-1 in every layer. They do not change once
computed, so a cache keeps them and each new token costs one position's work instead of the whole prefix.

Layout: per layer, two preallocated tensors written in place (nothing is concatenated, nothing moves):

    keys[layer], values[layer]    (B_max, H_kv, capacity, D)    capacity = the model's block_size
    lengths                       B_max Python ints: the positions each row holds (kept on the host,
                                  so bookkeeping never waits for the device)

Row b's slot s holds position s: a row is a sequence of its own, with its own length. H_kv is taken from
the keys the model writes, so attention with fewer key/value heads than query heads (grouped-query
attention) caches only those.

One forward pass covers some rows (`cache.rows(...)`, default: rows 0..B-1 for a batch of B) and is one of:

    prefill   T >= 1 new tokens into EMPTY rows: a prompt, right-padded to the longest; `new_tokens`
              says how many of each row's T are real (the padding's keys land in slots past the row's
              length, where no query of that row can see them: causality hides them, see below)
    decode    T = 1 new token per row, at position lengths[row]

A chunk of several tokens after a row's prompt is refused: the engine never needs one (chunked prefill
would lift the rule; the mask below already handles it).

The mask. Attention must let query position q see key position k only when k <= q (causal); a sliding
window adds q - k < window, ALiBi turns q - k into a bias. So the mask is a function of POSITIONS, one
small function for all of them (`attention_mask`), not of a shared offset: rows of different lengths
share one batch. Because slot s holds position s, the slots a row has not filled yet (or filled with
padding) lie at positions > q and the causal rule already hides them; `valid` exists for layouts where
that is not so (a ring buffer).
"""

from __future__ import annotations

import torch


def attention_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, valid: torch.Tensor | None = None, window: int | None = None
) -> torch.Tensor:
    """Which keys each query may attend to: True = attend.

    q_pos (B, T) and k_pos (B, S) are the positions of the queries and keys (k_pos may be (1, S): the
    same for every row); valid (B, S), when given, marks the key slots that hold data. Returns (B, 1, T, S)
    (the 1 broadcasts over heads). `window`: a query sees only the last `window` positions, itself included.
    """
    q = q_pos[:, None, :, None]  # (B, 1, T, 1)
    k = k_pos[:, None, None, :]  # (B, 1, 1, S)
    mask = k <= q  # causal: never a later position
    if window is not None:
        mask = mask & (q - k < window)
    if valid is not None:
        mask = mask & valid[:, None, None, :]
    return mask


class KVCache:
    """Keys and values of every row's positions so far, preallocated per layer and written in place.

    KVCache(n_layer) sizes itself from the first forward pass (its batch, the model's block_size, the
    keys' heads, dtype and device); give batch_size / capacity / device / dtype to allocate up front.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int | None = None,
        capacity: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.n_layer = n_layer
        self.batch_size, self.capacity, self.device, self.dtype = batch_size, capacity, device, dtype
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.lengths: list[int] = [0] * (batch_size or 0)
        # What the current forward pass covers (set by rows() / begin(), read by the layers):
        self._rows: list[int] | None = None  # cache rows of the batch's rows; None: 0..B-1
        self._new: list[int] | None = None  # real new tokens per row; None: all T
        self.positions: torch.Tensor | int = 0  # (B, T) query positions, or an int start shared by all rows
        self.prefill = True  # this pass fills empty rows (attention causal over the new tokens alone)
        self.mask: torch.Tensor | None = None  # (B, 1, 1, S) for a decode of rows at different positions
        self._index: torch.Tensor | slice | None = None
        self._static_positions: torch.Tensor | None = None  # set by static() for one pass
        self._span = 0  # slots the decode attends to: the longest row's length + 1

    # --- the caller's side -------------------------------------------------------------------------

    @property
    def length(self) -> int:
        """Positions cached so far by the longest row (read before a forward pass)."""
        return max(self.lengths, default=0)

    def rows(self, rows: list[int], new_tokens: list[int] | None = None) -> KVCache:
        """This cache, for one forward pass over the cache rows `rows` (the batch's row i is cache row
        rows[i]); new_tokens[i]: how many of row i's tokens are real (a right-padded prompt). Returns the
        cache itself, set for that one pass: model(idx, cache=cache.rows([3, 5])) writes rows 3 and 5."""
        self._rows, self._new = list(rows), None if new_tokens is None else list(new_tokens)
        return self

    def reset(self, row: int) -> None:
        """Forget row `row` (its slots are overwritten by the next prefill)."""
        self.lengths[row] = 0

    def copy_row(self, source: int, targets: list[int]) -> None:
        """Copy row `source`'s keys, values and length into each of `targets`: n samples of one prompt
        share its prefill."""
        if not targets:
            return
        index = torch.tensor(targets, device=self.keys[0].device)
        n = self.lengths[source]
        for layer in range(self.n_layer):
            for store in (self.keys, self.values):
                store[layer][index, :, :n] = store[layer][source, :, :n]
        for t in targets:
            self.lengths[t] = n

    # --- the model's side (GPT.forward, then each attention layer) ---------------------------------

    def static(self, positions: torch.Tensor) -> KVCache:
        """This cache, for one decode pass with shapes that never change (static_decode.py): every row
        (B_max) takes one token at its position positions[row] (a (B_max,) tensor on the device, not the
        host lengths), and attends over all `capacity` slots through the mask. No host value enters, so
        torch.compile can capture the pass once (a CUDA graph) and replay it. The caller keeps
        self.lengths up to date (each live row + 1)."""
        self._static_positions = positions
        return self

    def _begin_static(self, B: int) -> None:
        positions = self._static_positions
        self.prefill, self.positions, self._span = False, positions[:, None], self.capacity  # (B, 1)
        slots = torch.arange(self.capacity, device=positions.device)[None, :]  # (1, capacity)
        self.mask = attention_mask(self.positions, slots)  # (B, 1, 1, capacity)
        self._index, self._scatter_index = (slice(0, B), positions), None

    def begin(self, B: int, T: int, capacity: int, device: torch.device) -> None:
        """Check and record what this forward pass of B rows x T new tokens writes."""
        if self._static_positions is not None:
            return self._begin_static(B)
        rows = self._rows if self._rows is not None else list(range(B))
        if self.capacity is None:
            self.capacity = capacity
        if len(self.lengths) < max(rows) + 1 and self.keys[0] is None:
            self.lengths += [0] * (max(rows) + 1 - len(self.lengths))
        starts = [self.lengths[r] for r in rows]
        longest = max(starts) + T
        if longest > self.capacity:
            raise ValueError(f"sequence of {longest} tokens is longer than block_size {self.capacity}")
        contiguous = rows == list(range(rows[0], rows[0] + B))
        index = slice(rows[0], rows[0] + B) if contiguous else torch.tensor(rows, device=device)
        self.prefill = T > 1 or longest == 1  # empty rows: positions 0..T-1, attention causal as in training
        if self.prefill:
            if max(starts) > 0:
                raise ValueError("KVCache: feed one token at a time after the prompt")
            self.positions, self.mask, self._span, self._index = 0, None, T, index
        elif min(starts) == max(starts):  # decode, every row at the same position: it sees every slot
            self.positions, self.mask, self._span, self._index = starts[0], None, longest, (index, starts[0])
        else:  # decode, rows of different lengths: each query at its own position, the mask hides the rest
            pos = torch.tensor(starts, device=device)  # (B,)
            self.positions = pos[:, None]  # (B, 1)
            self.mask = attention_mask(self.positions, torch.arange(longest, device=device)[None, :])  # (B, 1, 1, S)
            self._span, self._index = longest, (index, pos)
        self._scatter_index = None  # (B, H_kv, 1, D) slots for scatter_, made by the first layer
        self._current = rows

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this pass's keys and values k, v (B, H_kv, T, D) of `layer`; return the keys and values
        attention should use: for a prefill the new ones themselves (B, H_kv, T, D: the rows were
        empty), for a decode every slot up to the longest row (B, H_kv, S, D), to be read with self.mask
        (None when every row is at the same position: then each sees all S slots)."""
        if self.keys[layer] is None:
            self._allocate(layer, k)
        K, V = self.keys[layer], self.values[layer]
        if self.prefill:  # slots 0..T-1 of each (empty) row
            rows = self._index
            K[rows, :, : k.size(2)] = k
            V[rows, :, : v.size(2)] = v
            return k, v
        rows, slot = self._index  # rows: a slice or the row ids; slot: one int for every row, or each row's (B,)
        if isinstance(slot, int):  # every row at the same position: a plain slice, the cheapest write
            K[rows, :, slot : slot + 1] = k
            V[rows, :, slot : slot + 1] = v
        elif isinstance(rows, slice):  # row i's key into its own slot pos[i], on views of the batch's rows
            if self._scatter_index is None:
                self._scatter_index = slot.view(-1, 1, 1, 1).expand(k.shape)  # (B, H_kv, 1, D)
            K[rows].scatter_(2, self._scatter_index, k)
            V[rows].scatter_(2, self._scatter_index, v)
        else:  # scattered rows at their own positions (not what the engine sends)
            K[rows, :, slot] = k[:, :, 0]
            V[rows, :, slot] = v[:, :, 0]
        # (B, H_kv, S, D): views of the cache for a slice of rows; copies (a gather) for scattered rows
        return K[rows, :, : self._span], V[rows, :, : self._span]

    def end(self, T: int) -> None:
        """After the last layer: each row now holds its new positions."""
        if self._static_positions is not None:
            self._static_positions = None  # the caller counts (see static())
            return
        new = self._new if self._new is not None else [T] * len(self._current)
        for row, n in zip(self._current, new):
            self.lengths[row] += n
        self._rows = self._new = None  # the next pass covers rows 0..B-1 unless told otherwise

    def _allocate(self, layer: int, k: torch.Tensor) -> None:
        B_max = max(self.batch_size or 0, len(self.lengths), k.size(0))
        self.batch_size = B_max
        shape = (B_max, k.size(1), self.capacity, k.size(3))  # (B_max, H_kv, capacity, D)
        device, dtype = self.device or k.device, self.dtype or k.dtype
        self.keys[layer] = torch.zeros(shape, device=device, dtype=dtype)
        self.values[layer] = torch.zeros(shape, device=device, dtype=dtype)
