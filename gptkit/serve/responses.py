"""OpenAI's response shapes, built from what the engine reported for each choice.

    /v1/completions         {"object": "text_completion", "choices": [{"index", "text", "logprobs", "finish_reason"}], "usage"}
    /v1/chat/completions    {"object": "chat.completion", "choices": [{"index", "message": {"role", "content"}, "logprobs", "finish_reason"}], "usage"}

Streamed, each server-sent event is one chunk of the same kind (`text_completion` chunks carry `text`,
`chat.completion.chunk`s a `delta`), the last one of a choice has its finish_reason, an optional usage
chunk with no choices follows, and `data: [DONE]` ends the stream.

Log-probabilities come in the two shapes OpenAI uses: the completions endpoint's parallel lists
(tokens, token_logprobs, top_logprobs as {token: logprob}, text_offset) and chat's list of
{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field


@dataclass
class ChoiceResult:
    """One choice as it grows, event by event: its text is the concatenation of the events' text."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, str, float]]] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, event) -> None:
        self.text += event.text
        if event.token_id is not None:
            self.token_ids.append(event.token_id)
            if event.logprob is not None:
                self.logprobs.append(event.logprob)
                self.top_logprobs.append(list(event.top_logprobs or []))
        if event.finish_reason is not None:
            # "cancelled" only reaches a client that is gone; anything else ended on a stop or the length
            self.finish_reason = "length" if event.finish_reason == "length" else "stop"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def sse(payload: dict | str) -> str:
    """One server-sent event."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


SSE_DONE = sse("[DONE]")


class Shapes:
    """Builds one request's response or chunks: the id, creation time and model name they all share."""

    def __init__(self, kind: str, model: str, token_text, token_bytes):
        self.kind = kind  # "completion" or "chat"
        self.id = new_id("cmpl" if kind == "completion" else "chatcmpl")
        self.created = int(time.time())
        self.model = model
        self.token_text = token_text  # id -> str
        self.token_bytes = token_bytes  # id -> bytes

    def _envelope(self, obj: str, choices: list, **extra) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "system_fingerprint": None, "choices": choices, **extra}

    # --- log-probabilities ------------------------------------------------------------------------

    def completion_logprobs(self, ids: list[int], logprobs: list[float], tops: list, start_offset: int, want_top: bool) -> dict:
        tokens = [self.token_text(i) for i in ids]
        offsets, at = [], start_offset
        for text in tokens:
            offsets.append(at)
            at += len(text)
        top = [{text: lp for _, text, lp in alternatives} for alternatives in tops] if want_top else None
        return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": top, "text_offset": offsets}

    def chat_logprobs(self, ids: list[int], logprobs: list[float], tops: list) -> dict:
        def entry(token_id: int, text: str, logprob: float) -> dict:
            return {"token": text, "logprob": logprob, "bytes": list(self.token_bytes(token_id))}

        return {
            "content": [
                {**entry(i, self.token_text(i), lp), "top_logprobs": [entry(a, t, alp) for a, t, alp in alternatives]}
                for i, lp, alternatives in zip(ids, logprobs, tops)
            ]
        }

    # --- whole responses --------------------------------------------------------------------------

    def completion(self, choices: list[ChoiceResult], prompt_tokens: int, want_logprobs: int | None, prefixes: list[str]) -> dict:
        """prefixes: per choice, the text echoed before it (echo=true), else ''."""
        out = []
        for choice, prefix in zip(choices, prefixes):
            logprobs = None
            if want_logprobs is not None:
                logprobs = self.completion_logprobs(choice.token_ids, choice.logprobs, choice.top_logprobs, len(prefix), want_logprobs > 0)
            out.append({"index": choice.index, "text": prefix + choice.text, "logprobs": logprobs, "finish_reason": choice.finish_reason})
        return self._envelope("text_completion", out, usage=usage(prompt_tokens, sum(len(c.token_ids) for c in choices)))

    def chat(self, choices: list[ChoiceResult], prompt_tokens: int, want_logprobs: bool) -> dict:
        out = []
        for choice in choices:
            logprobs = self.chat_logprobs(choice.token_ids, choice.logprobs, choice.top_logprobs) if want_logprobs else None
            out.append({
                "index": choice.index, "message": {"role": "assistant", "content": choice.text, "refusal": None},
                "logprobs": logprobs, "finish_reason": choice.finish_reason,
            })
        return self._envelope("chat.completion", out, usage=usage(prompt_tokens, sum(len(c.token_ids) for c in choices)))

    # --- streamed chunks --------------------------------------------------------------------------

    def chunk(self, index: int, event, text_offset: int, want_logprobs) -> dict:
        """The chunk for one engine event of choice `index`."""
        ids = [event.token_id] if event.token_id is not None and event.logprob is not None else []
        lps = [event.logprob] if ids else []
        tops = [list(event.top_logprobs or [])] if ids else []
        finish = None if event.finish_reason is None else ("length" if event.finish_reason == "length" else "stop")
        if self.kind == "completion":
            logprobs = self.completion_logprobs(ids, lps, tops, text_offset, want_logprobs > 0) if want_logprobs is not None and ids else None
            return self._envelope("text_completion", [{"index": index, "text": event.text, "logprobs": logprobs, "finish_reason": finish}])
        delta = {"content": event.text} if event.text or finish is None else {}
        logprobs = self.chat_logprobs(ids, lps, tops) if want_logprobs and ids else None
        return self._envelope("chat.completion.chunk", [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}])

    def chat_role_chunk(self, index: int) -> dict:
        """A chat stream opens each choice with the assistant's role."""
        return self._envelope("chat.completion.chunk", [{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        obj = "text_completion" if self.kind == "completion" else "chat.completion.chunk"
        return self._envelope(obj, [], usage=usage(prompt_tokens, completion_tokens))
