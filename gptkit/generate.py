"""Stage 4, `gptkit sample`: text from a checkpoint.

`generate` below is the textbook loop, one token at a time, to read; `sample_texts` (what `gptkit sample`
runs) and `complete_requests` (its --jsonl) run on the batched engine (engine.py), where speed lives and
every sampling control of sampling.py is available.

Autoregressive sampling: feed the prompt, turn the last position's logits into a probability
distribution, draw the next token, append it, repeat. Two knobs shape the distribution:

    temperature   logits / T before the softmax: < 1 sharper (safer), > 1 flatter (wilder);
                  0 means greedy decoding, always the most likely token
    top_k         keep only the k most likely tokens, so rare nonsense is never drawn

A KV cache (see model.KVCache) keeps the keys and values of earlier positions, so each new token costs
one position's work instead of the whole prefix. Once the text outgrows the context window, the model
sees only the last block_size tokens, and the cache is rebuilt for each new window.

The engine loads the model with inference.load_model, so `--dtype auto` means what it means for
eval and training: float32 on a CPU, bfloat16 (or float16 on older GPUs) autocast on a GPU.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

import torch

from gptkit.devices import Runtime
from gptkit.engine import Completion, Engine, TokenEvent, completion_of
from gptkit.errors import GptkitError
from gptkit.inference import load_model
from gptkit.model import GPT, KVCache
from gptkit.sampling import SamplingParams
from gptkit.tokenizers import Tokenizer


def next_token(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> torch.Tensor:
    """logits: (B, vocab) for the last position -> (B, 1) sampled ids."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth_largest = torch.topk(logits, top_k).values[:, [-1]]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs.cpu(), num_samples=1, generator=generator).to(logits.device)


@torch.no_grad()
def generate(
    model: GPT,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = 200,
    generator: torch.Generator | None = None,
    stop_id: int | None = None,
    precision: torch.dtype = torch.float32,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` new token ids, one at a time (stops early at `stop_id`).

    Random draws come from `generator` (a CPU torch.Generator), so a seeded generator repeats its text.
    `precision`: the autocast dtype of the forward passes (a Runtime's dtype; float32: no autocast).
    """
    if not prompt_ids:
        raise ValueError("generation needs at least one prompt token")
    model.eval()
    device = next(model.parameters()).device
    block_size = model.config.block_size
    if generator is None:
        generator = torch.Generator()
        generator.seed()  # a fresh random seed
    tokens = list(prompt_ids)
    cache = None
    # Autocast is entered around each forward pass, never held across a `yield`: it is a thread-wide
    # setting, and the caller's code between two tokens must not run under it.
    autocast = Runtime(device, precision).autocast
    for _ in range(max_new_tokens):
        if cache is None or cache.length >= block_size:
            # (Re)start: run the last block_size tokens through the model, filling a fresh cache.
            cache = KVCache(model.config.n_layer)
            window = torch.tensor([tokens[-block_size:]], device=device)
        else:
            window = torch.tensor([[tokens[-1]]], device=device)  # only the newest token
        with autocast:
            logits, _ = model(window, cache=cache)
        # Only real tokens: the padded ids past vocab_size (model.py) must never be drawn.
        token = int(next_token(model.unpadded(logits[:, -1, :]), temperature, top_k, generator))
        tokens.append(token)
        yield token
        if token == stop_id:
            return


def decode_stream(tokenizer: Tokenizer, ids: Iterator[int]) -> Iterator[str]:
    """Turn a stream of ids into a stream of text pieces.

    One token can be part of a multi-byte character (byte-level BPE splits emoji and CJK across
    tokens); such a token decodes to U+FFFD alone. So ids wait until they decode cleanly.
    """
    pending: list[int] = []
    for token in ids:
        pending.append(token)
        text = tokenizer.decode(pending)
        if not text.endswith("\ufffd") or len(pending) >= 8:
            yield text
            pending = []
    if pending:
        yield tokenizer.decode(pending)


def encode_prompt(tokenizer: Tokenizer, prompt: str | None, block_size: int) -> tuple[str, list[int]]:
    """The ids to start from. No prompt starts from a newline (as nanoGPT does), or <|endoftext|>."""
    if prompt:
        ids = tokenizer.encode(prompt)
    else:
        prompt = ""
        try:
            ids = tokenizer.encode("\n")
        except GptkitError:
            ids = []
        ids = ids or ([tokenizer.eot_id] if tokenizer.eot_id is not None else [0])
    if len(ids) > block_size:
        raise GptkitError(
            f"the prompt is {len(ids):,} tokens long, longer than the model's context of {block_size:,} tokens",
            hint="shorten the prompt; the model cannot see more than its context",
        )
    return prompt, ids


class SampleStream:
    """One sample's text pieces, yielded as they are generated (an iterator); once it is exhausted, how
    the sample ended: finish_reason ("stop": <|endoftext|> or a stop string; "length"), ended_at_eot,
    token_ids, and logprobs / top_logprobs when asked for."""

    def __init__(self, pump: _EventPump, request_id: int, tokenizer: Tokenizer):
        self._pump, self._id, self._eot = pump, request_id, tokenizer.eot_id
        self.decode = tokenizer.decode
        self.finish_reason: str | None = None
        self.ended_at_eot = False
        self.token_ids: list[int] = []
        self.logprobs: list[float] = []
        self.top_logprobs: list = []

    def __iter__(self) -> Iterator[str]:
        while self.finish_reason is None:
            event = self._pump.next_event(self._id)
            if event.token_id is not None:
                self.token_ids.append(event.token_id)
                self.logprobs.append(event.logprob)
                self.top_logprobs.append(event.top_logprobs)
            self.finish_reason = event.finish_reason
            self.ended_at_eot = event.finish_reason == "stop" and event.token_id == self._eot
            if event.text:
                yield event.text


class _EventPump:
    """Steps the engine until a given request has an event, keeping the others' events for later: the
    first sample streams live while the rest decode beside it."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.queues: dict[int, deque[TokenEvent]] = {}

    def next_event(self, request_id: int) -> TokenEvent:
        queue = self.queues.setdefault(request_id, deque())
        while not queue:
            for event in self.engine.step():
                self.queues.setdefault(event.request_id, deque()).append(event)
        return queue.popleft()


def open_engine(
    ckpt: str | Path, device: str = "auto", dtype: str = "auto", adapter: str | Path | None = None,
    batch_size: int = 8, quantize: str | None = None,
) -> Engine:
    """An engine over the checkpoint's model (inference.load_model: the same --device/--dtype rules as
    eval). quantize="int8": the Linear layers as dynamically quantized int8, CPU only (quantize.py)."""
    loaded = load_model(ckpt, device, dtype, adapter)
    model = loaded.model
    if quantize is not None:
        from gptkit.quantize import quantize_model

        model = quantize_model(model, quantize, loaded.runtime.device)
    return Engine(model, loaded.tokenizer(), max_batch_size=batch_size, precision=loaded.runtime.dtype)


def sample_texts(
    ckpt: str | Path,
    prompt: str | None = None,
    num_samples: int = 1,
    max_new_tokens: int = 500,
    temperature: float = 0.8,
    top_k: int | None = 200,
    seed: int | None = None,
    device: str = "auto",
    stop_at_eot: bool = True,
    dtype: str = "auto",
    adapter: str | Path | None = None,
    batch_size: int = 8,
    quantize: str | None = None,
    **controls,
) -> Iterator[tuple[str, SampleStream]]:
    """For each sample, yield (prompt text, stream of generated text pieces). Loads the checkpoint once;
    the samples decode together on the engine (up to `batch_size` at a time) from one shared prefill.

    `controls`: any other SamplingParams field (top_p, min_p, repetition_penalty, frequency_penalty,
    presence_penalty, stop, logprobs). With a seed, sample i uses seed + i, and the same call gives
    the same text on the same machine.
    """
    if temperature < 0:
        raise GptkitError(f"--temperature must be >= 0 (got {temperature})")
    engine = open_engine(ckpt, device, dtype, adapter, batch_size, quantize)
    tokenizer = engine.tokenizer
    prompt_text, prompt_ids = encode_prompt(tokenizer, prompt, engine.block_size)
    pump = _EventPump(engine)
    streams = []
    for index in range(num_samples):
        params = SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, stop_at_eot=stop_at_eot,
            seed=None if seed is None else seed + index, **controls,
        )
        streams.append(SampleStream(pump, engine.add_request(prompt_ids, params), tokenizer))
    for stream in streams:
        yield prompt_text, stream


def complete_requests(engine: Engine, requests: Iterable[tuple[list[int], SamplingParams]]) -> Iterator[Completion]:
    """Completions of `requests` (prompt ids, params), in their order, decoded together: requests are
    read only as rows free up (at most twice the batch ahead), so an endless input streams."""
    pending: deque[int] = deque()
    done: dict[int, list[TokenEvent]] = {}
    inputs: dict[int, tuple[list[int], SamplingParams]] = {}
    source = iter(requests)
    exhausted = False
    while True:
        while not exhausted and len(pending) < 2 * engine.max_batch_size:
            item = next(source, None)
            if item is None:
                exhausted = True
                break
            request_id = engine.add_request(*item)
            pending.append(request_id)
            inputs[request_id], done[request_id] = item, []
        if not pending:
            return
        while pending and done[pending[0]] and done[pending[0]][-1].finish_reason is not None:
            request_id = pending.popleft()
            prompt_ids, params = inputs.pop(request_id)
            yield completion_of(prompt_ids, params, done.pop(request_id))
        if pending:
            for event in engine.step():
                done[event.request_id].append(event)
