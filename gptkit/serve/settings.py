"""What `gptkit serve` is told: the checkpoint, where to listen, and the limits every request must stay inside.

The limits are the server's safety: a client can ask for anything, and each of these caps what one request,
or all of them together, can cost.

    max_batch_size     rows the engine decodes together (continuous batching: a request joins at the next step)
    max_queue          rows waiting for a free batch slot; more answer 503 with Retry-After
    max_tokens         the most new tokens one choice may ask for (and the default of a chat request)
    max_prompt_tokens  the longest prompt, in tokens (None: the model's context, block_size)
    max_n              the most choices (n, times the prompts of a batched /v1/completions) one request may ask for
    max_body_bytes     the largest request body read; a larger one answers 413 before it is parsed
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ServeSettings:
    ckpt: Path
    host: str = "127.0.0.1"  # loopback: reachable from this machine only, unless told otherwise
    port: int = 8000
    api_key: str | None = None  # when set, /v1/* and /metrics need "Authorization: Bearer <key>"
    device: str = "auto"
    dtype: str = "auto"
    adapter: Path | None = None
    chat_template: str | None = None  # a template for a checkpoint that records none (chat_template.resolve_template)
    model_name: str | None = None  # the id /v1/models lists; default: the checkpoint's file name
    max_batch_size: int = 8
    max_queue: int = 64
    max_tokens: int = 1024
    max_prompt_tokens: int | None = None
    max_n: int = 16
    max_body_bytes: int = 1_000_000
    drain_timeout: float = 60.0  # seconds SIGTERM waits for in-flight requests before closing them
    log_level: str = "info"

    @property
    def served_name(self) -> str:
        return self.model_name or Path(self.ckpt).stem
