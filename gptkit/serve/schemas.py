"""The requests the server accepts, in the OpenAI API's shapes, checked before anything reaches the engine.

Two bodies: /v1/completions (a prompt to continue) and /v1/chat/completions (messages, rendered with the
checkpoint's chat template). Field names, ranges and defaults are OpenAI's:

    max_tokens         new tokens per choice (completions: 16 by default; chat: the server's --max-tokens)
    temperature        0..2, 0 is greedy;  top_p  0 < p <= 1;  n  choices per prompt
    stop               a string or up to 4; matched across token boundaries, never part of the text
    seed               same seed, same text (choice j of n uses seed + j, so the n choices differ)
    logprobs           completions: an int, the top-N alternatives per token (0: only the chosen one);
                       chat: a bool, with top_logprobs (0..20) for the alternatives
    presence_penalty, frequency_penalty   -2..2
    stream, stream_options.include_usage  server-sent events, and a last chunk with the token counts

and, as in vLLM, the extensions `top_k`, `min_p`, `repetition_penalty` and `ignore_eos`. Unknown fields are ignored, as
OpenAI does; a value out of range, a wrong type or a feature this server lacks (suffix, logit_bias, tools)
is a 400 that names the field. Types are strict: "0.5" is not a temperature.
"""

from __future__ import annotations

import re
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gptkit.serve.api_errors import ApiError

MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_TOP_LOGPROBS = 20


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class SamplingFields(BaseModel):
    """The controls both endpoints share."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Union[str, list[str], None] = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict | None = None
    user: str | None = None
    # extensions (vLLM's names)
    top_k: int | None = Field(None, ge=0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    ignore_eos: bool = False  # go on past <|endoftext|> (benchmarks: a fixed number of tokens)

    @model_validator(mode="after")
    def _check_shared(self):
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP_STRINGS:
            raise ValueError(f"stop: at most {MAX_STOP_STRINGS} stop strings")
        if self.logit_bias:
            raise ValueError("logit_bias: not supported by this server")
        return self

    @property
    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stops if s)  # an empty stop string would end every text at once

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(SamplingFields):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _check_completion(self):
        if self.suffix:
            raise ValueError("suffix: not supported by this server (a GPT continues text, it does not fill gaps)")
        if self.best_of not in (None, 1, self.n):
            raise ValueError("best_of: not supported by this server (use n)")
        if self.echo and self.stream:
            raise ValueError("echo: not supported together with stream")
        if self.echo and self.logprobs is not None:
            raise ValueError("echo: not supported together with logprobs (the prompt's own log-probabilities)")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompt field as a list of prompts, each text or token ids (OpenAI accepts all four forms)."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            return [""]
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None

    def as_template_message(self) -> dict:
        """{"role", "content"} as chat_template expects: "developer" is OpenAI's newer name for system,
        and content given as text parts is their text joined."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatCompletionRequest(SamplingFields):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list | None = None
    response_format: dict | None = None

    @model_validator(mode="after")
    def _check_chat(self):
        if self.tools:
            raise ValueError("tools: not supported by this server")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise ValueError("response_format: only {'type': 'text'} is supported")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs set to true")
        return self

    @property
    def logprobs_count(self) -> int | None:
        """The engine's logprobs setting: None (none), 0 (the chosen token's) or N alternatives."""
        return (self.top_logprobs or 0) if self.logprobs else None


def parse_request(kind: type[BaseModel], raw: bytes) -> BaseModel:
    """The body as `kind`, or an ApiError(400) naming the first bad field, OpenAI style."""
    if not raw.strip():
        raise ApiError(400, "the request body is empty: send a JSON object", code="invalid_json")
    try:
        return kind.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise ApiError(400, f"the request body is not valid JSON ({first['msg']})", code="invalid_json") from None
        param = ".".join(str(part) for part in first["loc"] if not _is_union_branch(part)) or None
        message = first["msg"].removeprefix("Value error, ")
        if param is None and re.match(r"^\w+: ", message):  # a check across fields names its field first
            param = message.split(":")[0]
        if first["type"] == "missing":
            message = f"'{param}' is a required property"
        elif first["type"] == "model_type" and not first["loc"]:
            message = "the request body must be a JSON object"
        elif param and not message.startswith(param.split(".")[0]):
            message = f"{param}: {message}"
        raise ApiError(400, message, param=param, code="invalid_value") from None


def _is_union_branch(part) -> bool:
    # pydantic names the branch of a Union it tried ("str", "list[int]") inside the location
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "none") or "[" in part)
