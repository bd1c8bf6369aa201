"""Decoding on a CPU: three changes to how a decode step runs, none to what it computes.

A decode step multiplies a few vectors (one per row of the batch) by every weight matrix of the model.
On a GPU that is fast whatever one does; on a CPU it is bound by two things, and the engine (engine.py)
attacks both. Figures: the 2-core development machine (docs/performance.md), GPT-2 small's shapes.

1. Streaming the weights (large models). Each token reads every weight once: 497 MB for the 124M shape.

   * The layout (lay_out_for_decoding). nn.Linear stores W as (out, in) and computes x @ W.T; BLAS
     streams that transposed layout markedly slower than an (in, out) matrix read as it lies (the 48 block
     matrices: 23.4 against 18.3 ms per token; the 50,257-row output layer 11.7 against 5.6 ms). So the
     engine stores every Linear weight, and a tied embedding, as the transpose of a contiguous (in, out)
     matrix: the same values, modules, shapes and state_dict, only the strides change. It does so IN
     PLACE on the model it is given (a copy would double its memory); the model still computes the same
     function and trains as before (a little slower).

   * Every core (SplitMatmuls). MKL computes a product of a few rows on ONE core, and one core cannot
     stream memory at the machine's speed: a plain sum of the same 340 MB of block matrices reads 25 GB/s
     on one thread and 45 GB/s on two, where the matmuls reach 18.6. So inside the engine's decode pass,
     a product of few rows with a large laid-out weight is cut along its inner dimension into P parts,
     P = torch's thread count, and computed as P partial products and their sum:

         x @ W.T  =  sum_p  x[:, part p] @ W.T[part p, :]      # one torch.bmm over the P parts, then .sum(0)

     torch.bmm spreads its batch of P products over the threads, and the (in, out) buffer IS the P
     blocks (in/P, out) one after another, so nothing is copied: 18.3 -> 11.4 ms for the block matrices.
     The sum's order differs from a single matmul's, so the result agrees to float32 rounding (~1e-6
     relative), not bit for bit. Small weights are left alone: a matrix that sits in the cache costs
     less than the two extra calls (measured: 128-wide blocks 1.6-2.3x slower split, 256-wide and up
     0.55-0.65x the time).

2. Calling the kernels (small models). A 0.8M-parameter model's step is ~100 tensor operations on
   vectors of 128-512 values, and each pays a fixed price to dispatch. One of them pays far more than it
   needs: torch runs an exact GELU through oneDNN, whose per-call set-up (~6 us) dwarfs the work on a
   few hundred values (~1 us in torch's own kernel). without_onednn() turns oneDNN off for the step, in
   float32 (float32 matmuls use MKL either way; bfloat16 ones need oneDNN, so it stays on there).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["SplitMatmuls", "lay_out_for_decoding", "laid_out", "split_linear", "without_onednn"]


def lay_out_for_decoding(model: torch.nn.Module) -> torch.nn.Module:
    """Store each nn.Linear weight of `model` (and a tied embedding, which is the output layer too) as
    the transpose of a contiguous (in, out) matrix, in place (see the module docstring): W keeps its
    shape (out, in) and its values, its strides become (1, out), so F.linear's x @ W.T reads a
    contiguous matrix. Idempotent: a weight already laid out is not contiguous and is left alone."""
    with torch.no_grad():
        for weight in _matmul_weights(model):
            if weight.is_contiguous():
                weight.data = weight.t().contiguous().t()  # (out, in) values over an (in, out) buffer
    return model


def laid_out(weight: torch.Tensor) -> bool:
    """Whether `weight` (out, in) lies over a contiguous (in, out) buffer (lay_out_for_decoding's work)."""
    return weight.dim() == 2 and weight.t().is_contiguous() and not weight.is_contiguous()


def split_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, parts: int = 2) -> torch.Tensor:
    """F.linear(x, weight, bias) computed as `parts` partial products over the inner dimension, for a
    laid-out weight (see the module docstring). x (..., in) -> (..., out); in must divide by `parts`."""
    C = x.size(-1)
    pieces = x.reshape(-1, parts, C // parts).transpose(0, 1)  # (P, M, in/P): each row cut into P pieces
    blocks = weight.t().view(parts, C // parts, -1)  # (P, in/P, out): the (in, out) buffer cut along in
    y = torch.bmm(pieces, blocks).sum(0)  # (M, out): P products side by side on the threads, then added
    if bias is not None:
        y = y + bias
    return y.view(*x.shape[:-1], y.size(-1))


class SplitMatmuls(TorchFunctionMode):
    """Inside `with SplitMatmuls():`, F.linear (every nn.Linear, and a tied output layer) runs as
    split_linear on all of torch's threads when it multiplies at most MAX_ROWS rows by a laid-out float32
    weight of at least MIN_WEIGHT values; every other call runs as it would. The engine enters it around
    its decode pass only, and only for a model that has such a weight (for_model)."""

    MIN_WEIGHT = 1 << 17  # 512 KiB of float32: smaller matrices sit in the cache (see the module docstring)
    MAX_ROWS = 32  # measured faster up to 32 rows (124M shape); a prefill's many rows are compute-bound

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> SplitMatmuls | None:
        """A SplitMatmuls for `model` when it can use one (more than one thread, a large laid-out float32
        weight), else None."""
        if torch.get_num_threads() > 1 and any(cls.splits(w) for w in _matmul_weights(model)):
            return cls()
        return None

    @classmethod
    def splits(cls, weight: torch.Tensor) -> bool:
        return weight.dtype == torch.float32 and weight.numel() >= cls.MIN_WEIGHT and laid_out(weight)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if x.dtype == weight.dtype and x.numel() <= self.MAX_ROWS * x.size(-1) and self.splits(weight):
                parts = _parts(x.size(-1), torch.get_num_threads())
                if parts > 1:
                    return split_linear(x, weight, bias, parts)
        return func(*args, **kwargs)


@contextmanager
def without_onednn(active: bool = True) -> Iterator[None]:
    """PyTorch's oneDNN kernels switched off inside the block (when `active`), back as they were after it
    (see the module docstring: an exact GELU's oneDNN set-up costs more than the work on a decode step)."""
    saved = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = saved and not active
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = saved


def _matmul_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """The 2-D weights a decode step multiplies by: every nn.Linear's, and a tied embedding's."""
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if getattr(model, "lm_head", False) is None:  # tied: logits = x @ token_embedding.weight.T
        weights.append(model.token_embedding.weight)
    return [w for w in weights if w.dim() == 2]


def _parts(inner: int, threads: int) -> int:
    """The most parts, at most `threads`, that divide the inner dimension evenly."""
    return next(p for p in range(min(threads, inner), 0, -1) if inner % p == 0)
