"""The generation engine: many requests decoded together, one token per request per step.

`generate.py` is the loop to read; this is the one to run. What it adds:

  * a preallocated KV cache (kv_cache.KVCache) of max_batch_size rows, one request per row, each row at its
    own position: prompts of different lengths share a batch, and a row's tokens never depend on the
    others (a row's keys are its own; its random draws come from its own generator)
  * prefill once: a prompt goes through the model in one pass (right-padded beside the other newcomers);
    requests with the same prompt that join together share one prefill, its cache row copied (n samples)
  * continuous batching: add_request() queues a request; each step() admits waiting requests into free
    rows, prefills them, decodes one token for every running row, and frees finished rows, so a new
    request joins the running batch at the next step and a finished one leaves at once
  * one host sync per step (the chosen ids, needed for text and stop strings); the last tokens stay on
    the device, the per-row sampling controls are tensors built only when rows join or leave

Text longer than the context (sliding window). A row's cache holds at most block_size positions. When a
row is full and needs one more, its window restarts at the text's last block_size - context_shift tokens:
the row is emptied and those tokens are prefilled again (positions restart at 0), then decoding goes on.
context_shift = 0 (the default) is exact: every token past the context is predicted from the last
block_size tokens, as generate.py and a full recomputation do, at the cost of one prefill per token. A
shift s > 0 re-prefills once every s + 1 tokens and predicts each from between block_size - s and
block_size tokens: cheaper, not the same tokens. Inside the context, neither re-prefills.

On a CPU (cpu_decode.py): the weights are laid out (in, out) in memory, IN PLACE on the model it is given
(the same values, modules and state_dict; cpu_layout=False leaves the model alone); the decode pass of a
model with large matrices splits each product over all cores (split_matmuls; results equal to float32
rounding); and in float32 oneDNN is off for the step (its GELU set-up costs more than a small model's work).

static=True decodes with fixed shapes (static_decode.py), which torch.compile captures as a CUDA graph
on a GPU (compile="auto": on CUDA only); the tokens are the same.

The engine is not thread-safe: one thread calls step() (a server passes requests and events through queues).
"""

from __future__ import annotations

from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from gptkit.cpu_decode import SplitMatmuls, lay_out_for_decoding, without_onednn
from gptkit.devices import Runtime
from gptkit.errors import GptkitError
from gptkit.kv_cache import KVCache
from gptkit.sampling import BatchControls, SamplingParams, TextStream, choose, make_generator

__all__ = ["Completion", "Engine", "SamplingParams", "TokenEvent", "completion_of"]


@dataclass
class TokenEvent:
    """What one engine step yields for one request."""

    request_id: int
    token_id: int | None  # None when the request ended without a new token (e.g. cancelled)
    text: str  # new text released by this step ('' while held back); all `text` joined = the completion
    logprob: float | None
    top_logprobs: list[tuple[int, str, float]] | None  # (token id, token text, logprob), best first
    finish_reason: str | None  # None while running; "stop" (eot or stop string), "length", "cancelled"


@dataclass
class Completion:
    """The result of Engine.generate for one prompt. token_ids: every token drawn (an <|endoftext|> that
    ended it included); text: what was released (no stop string, no <|endoftext|>)."""

    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str
    logprobs: list[float] | None
    top_logprobs: list[list[tuple[int, str, float]]] | None


@dataclass
class _Request:
    id: int
    prompt_ids: list[int]
    params: SamplingParams
    stream: TextStream
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)  # generated so far
    start: int = 0  # index into prompt_ids + tokens where the model's window begins
    row: int | None = None
    cancelled: bool = False

    def context(self) -> list[int]:
        return (self.prompt_ids + self.tokens)[self.start :]


class Engine:
    def __init__(
        self,
        model,
        tokenizer,
        max_batch_size: int = 8,
        precision: torch.dtype = torch.float32,
        context_shift: int = 0,
        static: bool = False,
        compile: bool | str = "auto",
        cpu_layout: bool = True,
        split_matmuls: bool = True,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        on_cpu = self.device.type == "cpu"
        if cpu_layout and on_cpu:
            lay_out_for_decoding(model)
        # On a CPU in float32 (cpu_decode.py; bfloat16 autocast picks its own kernels, and needs oneDNN):
        # oneDNN off for each step, and a large model's decode products on every core.
        cpu_float32 = on_cpu and precision == torch.float32
        self.skip_onednn = cpu_float32
        self.split_matmuls = SplitMatmuls.for_model(model) if split_matmuls and cpu_float32 and not static else None
        self.block_size, self.vocab_size = model.config.block_size, model.config.vocab_size
        if not 0 <= context_shift < self.block_size:
            raise GptkitError(f"context_shift must be in 0..{self.block_size - 1} (got {context_shift})")
        self.context_shift = context_shift
        self.max_batch_size = max_batch_size
        self.cache = KVCache(model.config.n_layer, max_batch_size, self.block_size)
        self.rows: list[_Request | None] = [None] * max_batch_size
        self.waiting: deque[_Request] = deque()
        self.autocast = Runtime(self.device, precision).autocast
        self.last_tokens = torch.zeros(max_batch_size, 1, dtype=torch.long, device=self.device)  # each row's next input
        self.seen = self.counts = None  # (B_max, V) for the penalties, made when a request asks for one
        self._controls: BatchControls | None = None  # rebuilt when rows join or leave
        self._next_id = 0
        self._dead: list[_Request] = []  # cancelled before they started
        self.static = None  # static=True: decode through static_decode.StaticDecoder (CUDA graphs)
        if static:
            from gptkit.static_decode import StaticDecoder

            self.static = StaticDecoder(model, self.cache, self.device, compile)

    @classmethod
    def from_checkpoint(cls, ckpt: str | Path, device: str = "auto", dtype: str = "auto", adapter=None, **kw) -> Engine:
        from gptkit.inference import load_model

        loaded = load_model(ckpt, device, dtype, adapter)
        return cls(loaded.model, loaded.tokenizer(), precision=loaded.runtime.dtype, **kw)

    # --- requests ------------------------------------------------------------------------------------

    def add_request(self, prompt_ids: list[int], params: SamplingParams) -> int:
        """Queue a request; it joins the batch at the next step. Returns its id."""
        params.validate()
        if not prompt_ids:
            raise GptkitError("generation needs at least one prompt token", hint="give a prompt")
        if len(prompt_ids) > self.block_size:
            raise GptkitError(
                f"the prompt is {len(prompt_ids):,} tokens long, longer than the model's context of {self.block_size:,} tokens",
                hint="shorten the prompt; the model cannot see more than its context",
            )
        if max(prompt_ids) >= self.vocab_size or min(prompt_ids) < 0:
            raise GptkitError(f"a prompt token id is outside the vocabulary 0..{self.vocab_size - 1}")
        generator = make_generator(params.seed) if params.temperature > 0 else None
        request = _Request(self._next_id, list(prompt_ids), params, TextStream(self.tokenizer, tuple(params.stop)), generator)
        self._next_id += 1
        self.waiting.append(request)
        return request.id

    def cancel(self, request_id: int) -> None:
        """End a request; its row is freed at the next step (which yields its "cancelled" event)."""
        for request in list(self.waiting):
            if request.id == request_id:
                self.waiting.remove(request)
                self._dead.append(request)
        for request in self.rows:
            if request is not None and request.id == request_id:
                request.cancelled = True

    def has_work(self) -> bool:
        return bool(self.waiting or self._dead or any(r is not None for r in self.rows))

    # --- one step ------------------------------------------------------------------------------------

    def step(self) -> list[TokenEvent]:
        """Admit and prefill newcomers, decode one token for every running row, free finished rows."""
        events = [self._event(r, None, "", None, None, "cancelled") for r in self._dead]
        self._dead = []
        for request in self.rows:
            if request is not None and request.cancelled:
                events.append(self._event(request, None, request.stream.finish(), None, None, "cancelled"))
                self._free(request)
        self._admit()
        running = [r for r in self.rows if r is not None]
        if not running:
            return events
        # rows 0..hi-1 go through the model together (a static decoder: always all of them)
        hi = self.max_batch_size if self.static else max(r.row for r in running) + 1
        # A new row, or a full one whose window restarts (see the module docstring), is prefilled.
        refill = [r for r in running if not r.tokens or self.cache.lengths[r.row] == self.block_size]
        for request in refill:  # emptied first: the decode pass's throw-away token for them lands in slot 0
            self.cache.reset(request.row)
        with torch.inference_mode(), self.autocast, without_onednn(self.skip_onednn):
            logits = self._decode(hi, running, refill)  # (hi, V) float32, or None
            logits = self._prefill(hi, refill, logits)
            controls = self._batch_controls(hi)
            generators = [r.generator if r else None for r in self.rows[:hi]]
            if controls.penalised:
                chosen = choose(logits, controls, generators, self.seen[:hi], self.counts[:hi])  # (hi, 1)
            else:
                chosen = choose(logits, controls, generators)
            self.last_tokens[:hi] = chosen
            if controls.penalised:
                self.counts[:hi].scatter_add_(1, chosen, torch.ones_like(chosen, dtype=self.counts.dtype))
                self.seen[:hi].scatter_(1, chosen, True)
            ids = chosen.view(-1).tolist()  # the one host sync of the step
            scores = self._logprobs(logits, chosen, controls.logprobs)
        for request in running:
            events.append(self._advance(request, ids[request.row], scores, request.row))
        return events

    def _admit(self) -> None:
        """Waiting requests take the lowest free rows; the same prompt joining together shares a prefill."""
        for row in range(self.max_batch_size):
            if not self.waiting:
                break
            if self.rows[row] is None:
                request = self.waiting.popleft()
                request.row = row
                self.rows[row] = request
                self.cache.reset(row)
                if request.params.penalised:
                    self._reset_penalties(request)
                self._controls = None

    def _decode(self, hi: int, running: list[_Request], refill: list[_Request]) -> torch.Tensor | None:
        """One token for every running row not being prefilled: rows 0..hi-1 in one pass (idle rows
        compute a throw-away token, cheaper than gathering the live rows)."""
        skip = {r.row for r in refill}
        if all(r.row in skip for r in running):
            return None
        live = {r.row for r in running} - skip
        if self.static is not None:  # fixed shapes: every row, every slot, positions from a device buffer
            logits = self.static(self.last_tokens, self.cache.lengths)
            for row in live:
                self.cache.lengths[row] += 1
            return logits
        view = self.cache.rows(list(range(hi)), [1 if row in live else 0 for row in range(hi)])
        with self.split_matmuls or nullcontext():
            x = self.model.hidden_states(self.last_tokens[:hi], cache=view)  # (hi, 1, C)
            logits = self.model.output_logits(x[:, 0])
        return self.model.unpadded(logits).float()  # (hi, V)

    def _prefill(self, hi: int, refill: list[_Request], logits: torch.Tensor | None) -> torch.Tensor:
        """Prefill `refill`'s rows (prompts, or restarted windows) in one right-padded pass; their rows of
        the returned (hi, V) logits are those of their last real position."""
        if logits is None:
            logits = torch.zeros(hi, self.vocab_size, device=self.device)
        if not refill:
            return logits
        first_of: dict[tuple[int, ...], _Request] = {}  # a fresh prompt already being prefilled this step
        unique, copies = [], []
        for request in refill:
            if len(request.prompt_ids) + len(request.tokens) > self.block_size:
                request.start = len(request.prompt_ids) + len(request.tokens) - (self.block_size - self.context_shift)
            key = tuple(request.prompt_ids) if not request.tokens else None
            if key is not None and key in first_of:
                copies.append((first_of[key], request))
            else:
                unique.append(request)
                if key is not None:
                    first_of[key] = request
        contexts = [r.context() for r in unique]
        width = max(len(c) for c in contexts)
        idx = torch.tensor([c + [0] * (width - len(c)) for c in contexts], device=self.device)  # (P, width)
        view = self.cache.rows([r.row for r in unique], [len(c) for c in contexts])
        x = self.model.hidden_states(idx, cache=view)  # (P, width, C)
        last = torch.tensor([len(c) - 1 for c in contexts], device=self.device)
        rows = torch.tensor([r.row for r in unique], device=self.device)
        x_last = x[torch.arange(len(unique), device=self.device), last]  # (P, C)
        logits[rows] = self.model.unpadded(self.model.output_logits(x_last)).float()
        for source, request in copies:  # n samples of one prompt: copy its cache row and logits
            self.cache.copy_row(source.row, [request.row])
            logits[request.row] = logits[source.row]
        return logits

    def _batch_controls(self, hi: int) -> BatchControls:
        if self._controls is None or len(self._controls.greedy) != hi:
            self._controls = BatchControls([r.params if r else None for r in self.rows[:hi]], self.vocab_size, self.device)
        return self._controls

    def _logprobs(self, logits: torch.Tensor, chosen: torch.Tensor, n: int | None):
        """(chosen token's logprob per row, top-n (ids, logprobs) per row) from the raw logits, or None."""
        if n is None:
            return None
        logp = torch.log_softmax(logits, dim=-1)  # the model's own distribution
        picked = logp.gather(1, chosen).view(-1).tolist()
        if n == 0:
            return picked, None
        top = logp.topk(min(n, logp.size(-1)), dim=-1)
        return picked, (top.indices.tolist(), top.values.tolist())

    def _advance(self, request: _Request, token: int, scores, row: int) -> TokenEvent:
        """Record `token` for `request`: text released, finish checks, the row freed when done."""
        params = request.params
        request.tokens.append(token)
        logprob = tops = None
        if scores is not None and params.logprobs is not None:
            logprob = scores[0][row]
            if params.logprobs > 0:
                ids, values = scores[1][0][row][: params.logprobs], scores[1][1][row][: params.logprobs]
                tops = [(i, self.tokenizer.decode([i]), v) for i, v in zip(ids, values)]
        if params.stop_at_eot and token == self.tokenizer.eot_id:
            text, reason = request.stream.finish(), "stop"
        else:
            text = request.stream.push(token)
            reason = "stop" if request.stream.stopped else None
            if reason is None and len(request.tokens) >= params.max_new_tokens:
                text, reason = text + request.stream.finish(), "length"
        if reason is not None:
            self._free(request)
        return self._event(request, token, text, logprob, tops, reason)

    def _event(self, request, token, text, logprob, tops, reason) -> TokenEvent:
        return TokenEvent(request.id, token, text, logprob, tops, reason)

    def _free(self, request: _Request) -> None:
        self.rows[request.row] = None
        self.cache.reset(request.row)
        self._controls = None

    def _reset_penalties(self, request: _Request) -> None:
        if self.seen is None:
            shape = (self.max_batch_size, self.vocab_size)
            self.seen = torch.zeros(shape, dtype=torch.bool, device=self.device)
            self.counts = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self.seen[request.row] = False
        self.seen[request.row, torch.tensor(request.prompt_ids, device=self.device)] = True  # repetition: the prompt too
        self.counts[request.row] = 0.0  # frequency / presence: generated tokens only

    # --- conveniences --------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]) -> list[Completion]:
        """Run `prompts` to completion (batched, continuously) and return their completions in order."""
        each = params if isinstance(params, list) else [params] * len(prompts)
        ids = [self.add_request(p, q) for p, q in zip(prompts, each)]
        events: dict[int, list[TokenEvent]] = {i: [] for i in ids}
        while any(not ev or ev[-1].finish_reason is None for ev in events.values()):
            for event in self.step():
                if event.request_id in events:
                    events[event.request_id].append(event)
        return [completion_of(p, q, events[i]) for p, q, i in zip(prompts, each, ids)]

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[TokenEvent]:
        """One request's events as they come (other requests in the engine step along, their events dropped)."""
        request_id = self.add_request(prompt_ids, params)
        while True:
            for event in self.step():
                if event.request_id == request_id:
                    yield event
                    if event.finish_reason is not None:
                        return


def completion_of(prompt_ids: list[int], params: SamplingParams, events: list[TokenEvent]) -> Completion:
    """The Completion that a request's events add up to."""
    tokens = [e for e in events if e.token_id is not None]
    wants = params.logprobs is not None
    return Completion(
        prompt_ids=list(prompt_ids),
        token_ids=[e.token_id for e in tokens],
        text="".join(e.text for e in events),
        finish_reason=events[-1].finish_reason,
        logprobs=[e.logprob for e in tokens] if wants else None,
        top_logprobs=[e.top_logprobs for e in tokens] if wants and params.logprobs > 0 else None,
    )
