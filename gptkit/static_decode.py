"""A decode step with static shapes, for torch.compile and CUDA graphs (the engine's `static=True`).

On a GPU a small model's decode step is a few hundred tiny kernels, and launching them from Python
costs more than running them. A CUDA graph records the launches once and replays them in one call, but
only for a step whose shapes and addresses never change and that reads no host values. The engine's
ordinary step is not like that: it attends over the longest row's length (a shape that grows) and takes
positions from host-side lengths. This one is:

    tokens (B_max, 1) and positions (B_max,)  live in fixed device buffers, copied into before each call
    every row decodes (an idle row writes a throw-away key into slot 0 of its empty row)
    attention reads all block_size slots; kv_cache.attention_mask(positions, slots) hides the rest
    the cache tensors are marked static addresses, so the graph may write them in place

torch.compile(mode="reduce-overhead") then captures the step as a CUDA graph on its first calls. On a CPU
there is nothing to capture: the same static step runs eagerly (the tests check that it gives the
engine's tokens, and that the whole step traces as one graph, fullgraph=True, with no break).
"""

from __future__ import annotations

import torch

from gptkit.kv_cache import KVCache


class StaticDecoder:
    """decoder(tokens (B_max, 1), lengths: list[int]) -> logits (B_max, vocab_size) float32."""

    def __init__(self, model, cache: KVCache, device: torch.device, compile: bool | str = "auto"):
        self.model, self.cache = model, cache
        B = cache.batch_size
        self.tokens = torch.zeros(B, 1, dtype=torch.long, device=device)  # fixed input buffers
        self.positions = torch.zeros(B, dtype=torch.long, device=device)
        use_compile = device.type == "cuda" if compile == "auto" else bool(compile)
        if use_compile:
            backend = compile if isinstance(compile, str) and compile != "auto" else "inductor"
            mode = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else None
            self._step = torch.compile(self._decode, mode=mode, backend=backend, fullgraph=True)
        else:
            self._step = self._decode
        self._marked = False

    def _decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.model.hidden_states(tokens, cache=self.cache.static(positions))  # (B_max, 1, C)
        return self.model.unpadded(self.model.output_logits(x[:, 0])).float()  # (B_max, V)

    def __call__(self, tokens: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        if not self._marked and self.cache.keys[0] is not None:
            for tensor in self.cache.keys + self.cache.values:  # written in place by the captured graph
                torch._dynamo.mark_static_address(tensor)
            self._marked = True
        self.tokens.copy_(tokens)
        self.positions.copy_(torch.tensor(lengths), non_blocking=True)
        logits = self._step(self.tokens, self.positions)
        return logits.clone() if logits.device.type == "cuda" else logits  # a graph's output is overwritten by its next replay
