"""From a checked request to an answer: prompts to token ids, ids and controls to engine rows, and the
rows' events back to an OpenAI response, whole or as server-sent events.

    completions  each prompt (text or token ids) is encoded, checked against max_prompt_tokens, and run
                 n times; choice p * n + j is prompt p's j-th sample (seed + j when a seed is given)
    chat         the messages are rendered with the checkpoint's chat template (chat_template.apply_template),
                 which ends with the assistant's opening; generation stops at <|endoftext|>, at the stop
                 strings asked for, and where the template would start the next user turn

A client that disconnects cancels its job (Scheduler.cancel): nothing runs for a reader who is gone.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from gptkit.serve.api_errors import ApiError, queue_full
from gptkit.serve.responses import SSE_DONE, ChoiceResult, Shapes, sse
from gptkit.serve.scheduler import Job, QueueFull, Scheduler


class ClientGone(Exception):
    """The client closed its connection."""


@dataclass
class Prepared:
    """A request turned into engine rows, and what its response needs to say about them."""

    rows: list[tuple[list[int], object]]
    prompt_tokens: int  # each distinct prompt counted once, as OpenAI counts them
    prefixes: list[str]  # per choice: the echoed prompt text, or ''


class Service:
    def __init__(self, tokenizer, scheduler: Scheduler, settings, metrics, block_size: int, template: dict | None):
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.settings = settings
        self.metrics = metrics
        self.template = template
        # the engine reads at most its context; a longer prompt would not fit its window at all
        self.max_prompt_tokens = min(settings.max_prompt_tokens or block_size, block_size)

    # --- requests to rows -------------------------------------------------------------------------

    def encode(self, prompt: str | list[int], param: str) -> list[int]:
        if isinstance(prompt, list):
            bad = next((i for i in prompt if not 0 <= i < self.tokenizer.vocab_size), None)
            if bad is not None:
                raise ApiError(400, f"{param}: token id {bad} is outside the vocabulary (0..{self.tokenizer.vocab_size - 1})", param=param)
            ids = list(prompt)
        else:
            from gptkit.errors import GptkitError

            try:
                ids = self.tokenizer.encode_ordinary(prompt)
            except GptkitError as e:  # e.g. a character a char tokenizer never saw
                raise ApiError(400, f"{param}: {e.message}", param=param) from None
        if not ids:
            if self.tokenizer.eot_id is None:
                raise ApiError(400, f"{param}: the prompt is empty, and this model's tokenizer has no <|endoftext|> to start from", param=param)
            ids = [self.tokenizer.eot_id]  # OpenAI's default prompt
        if len(ids) > self.max_prompt_tokens:
            raise ApiError(
                400, f"{param}: the prompt is {len(ids):,} tokens, more than this server's limit of {self.max_prompt_tokens:,}",
                param=param, code="context_length_exceeded",
            )
        return ids

    def _max_tokens(self, asked: int | None, param: str) -> int:
        if asked is None:
            return self.settings.max_tokens
        if asked > self.settings.max_tokens:
            raise ApiError(400, f"{param}: {asked:,} is more than this server's limit of {self.settings.max_tokens:,}", param=param)
        return asked

    def _params(self, req, max_new_tokens: int, logprobs: int | None, extra_stops: tuple[str, ...], j: int):
        from gptkit.engine import SamplingParams
        from gptkit.errors import GptkitError

        params = SamplingParams(
            max_new_tokens=max_new_tokens, temperature=req.temperature, top_k=req.top_k or None, top_p=req.top_p,
            min_p=req.min_p, repetition_penalty=req.repetition_penalty, frequency_penalty=req.frequency_penalty,
            presence_penalty=req.presence_penalty, stop=req.stop_strings + extra_stops, stop_at_eot=not req.ignore_eos,
            seed=None if req.seed is None else (req.seed + j) % 2**63, logprobs=logprobs,
        )
        try:
            params.validate()
        except GptkitError as e:
            raise ApiError(400, e.message) from None
        return params

    def prepare_completion(self, req) -> Prepared:
        prompts = req.prompts()
        if len(prompts) * req.n > self.settings.max_n:
            raise ApiError(400, f"n: {len(prompts)} prompt(s) x n={req.n} choices is more than this server's limit of {self.settings.max_n}", param="n")
        max_new = self._max_tokens(req.max_tokens, "max_tokens")
        rows, prefixes, prompt_tokens = [], [], 0
        for p, prompt in enumerate(prompts):
            ids = self.encode(prompt, "prompt" if len(prompts) == 1 else f"prompt.{p}")
            prompt_tokens += len(ids)
            echoed = (prompt if isinstance(prompt, str) else self.tokenizer.decode(ids)) if req.echo else ""
            for j in range(req.n):
                rows.append((ids, self._params(req, max_new, req.logprobs, (), j)))
                prefixes.append(echoed)
        return Prepared(rows, prompt_tokens, prefixes)

    def prepare_chat(self, req) -> Prepared:
        from gptkit.chat_template import apply_template, completion_end, split_role

        if self.template is None:
            raise ApiError(
                400, "this model has no chat template: it was not fine-tuned on conversations (gptkit finetune records one); "
                "use /v1/completions, or start the server with --chat-template plain", param="messages", code="no_chat_template",
            )
        if req.n > self.settings.max_n:
            raise ApiError(400, f"n: {req.n} is more than this server's limit of {self.settings.max_n}", param="n")
        if req.max_tokens is not None and req.max_completion_tokens is not None:
            raise ApiError(400, "give max_tokens or max_completion_tokens, not both", param="max_completion_tokens")
        which = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        max_new = self._max_tokens(req.max_completion_tokens or req.max_tokens, which)
        text = apply_template(self.template, [m.as_template_message() for m in req.messages])
        ids = self.encode(text, "messages")
        next_turn = completion_end(self.template) + split_role(self.template, "user")[0]
        stops = (next_turn,) if next_turn.strip() else ()
        rows = [(ids, self._params(req, max_new, req.logprobs_count, stops, j)) for j in range(req.n)]
        return Prepared(rows, len(ids), [""] * req.n)

    # --- rows to answers --------------------------------------------------------------------------

    def submit(self, prepared: Prepared) -> Job:
        try:
            job = self.scheduler.submit(prepared.rows)
        except QueueFull as e:
            raise queue_full(e.retry_after_s) from None
        self.metrics.prompt_tokens += prepared.prompt_tokens
        return job

    def shapes(self, kind: str) -> Shapes:
        return Shapes(kind, self.settings.served_name, self._token_text, self._token_bytes)

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def _token_bytes(self, token_id: int) -> bytes:
        try:
            return self.tokenizer.decode_bytes([token_id])
        except Exception:  # a tokenizer without byte-exact decoding: its text's UTF-8
            return self._token_text(token_id).encode("utf-8")

    async def collect(self, job: Job, receive, started: float) -> list[ChoiceResult]:
        """Wait for every choice of a non-streamed job; ClientGone when the client leaves first."""
        choices = [ChoiceResult(i) for i in range(len(job.rows))]
        async with watch_disconnect(receive, job, self.scheduler):
            while not job.done:
                choice, event = await self._next(job, started)
                choices[choice].add(event)
        return choices

    async def stream(self, job: Job, receive, started: float, shapes: Shapes, prepared: Prepared, want_logprobs, include_usage: bool):
        """The server-sent events of a streamed job (an async iterator of str). `want_logprobs`: the
        request's field, an int or None (completions) or a bool (chat)."""
        logprobs_on = want_logprobs is not None and want_logprobs is not False  # completions' 0 means on
        offsets = [0] * len(job.rows)
        generated = 0
        try:
            async with watch_disconnect(receive, job, self.scheduler):
                if shapes.kind == "chat":
                    for i in range(len(job.rows)):
                        yield sse(shapes.chat_role_chunk(i))
                while not job.done:
                    try:
                        choice, event = await self._next(job, started)
                    except ClientGone:
                        return
                    except Exception as e:  # the engine failed this row: say so in the stream, as OpenAI does
                        yield sse({"error": {"message": f"generation failed: {e}", "type": "server_error", "param": None, "code": None}})
                        continue
                    generated += event.token_id is not None
                    if event.text or event.finish_reason is not None or (logprobs_on and event.token_id is not None):
                        yield sse(shapes.chunk(choice, event, offsets[choice], want_logprobs))
                    offsets[choice] += len(event.text)
                if include_usage:
                    yield sse(shapes.usage_chunk(prepared.prompt_tokens, generated))
                yield SSE_DONE
        finally:
            if not job.done:
                self.scheduler.cancel(job)

    async def _next(self, job: Job, started: float):
        choice, event = await job.next_event()
        if event.token_id is not None:
            self.metrics.generated_tokens += 1
        if event.text and not job.first_text_seen:
            job.first_text_seen = True
            self.metrics.first_token.observe(time.monotonic() - started)
        return choice, event


class watch_disconnect:
    """While a job runs, listen for the client's http.disconnect: then cancel the job and wake whoever waits
    on its events with ClientGone. (Read the body first: after it, receive() only reports the disconnect.)"""

    def __init__(self, receive, job: Job, scheduler: Scheduler):
        self.receive, self.job, self.scheduler = receive, job, scheduler
        self.task: asyncio.Task | None = None

    async def _listen(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.scheduler.cancel(self.job)
                self.job.events.put_nowait((None, ClientGone()))
                return

    async def __aenter__(self):
        self.task = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc):
        self.task.cancel()
        if not self.job.done:
            self.scheduler.cancel(self.job)
        return False
