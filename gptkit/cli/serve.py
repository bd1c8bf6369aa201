"""`gptkit serve`: an OpenAI-compatible HTTP server for a checkpoint (gptkit/serve/, docs/deployment.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gptkit.cli.app import app


@app.command(
    epilog="Examples:\n\n"
    "  gptkit serve --ckpt out/ckpt.safetensors\n\n"
    "  gptkit serve --ckpt ft/ckpt.safetensors --port 8080 --api-key \"$KEY\" --max-batch-size 16\n\n"
    "  curl localhost:8000/v1/completions -H 'Content-Type: application/json' -d '{\"prompt\": \"ROMEO:\", \"max_tokens\": 50}'",
)
def serve(
    ckpt: Path = typer.Option(Path("out/ckpt.safetensors"), "--ckpt", help="Checkpoint to serve."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 0.0.0.0 reaches beyond this machine."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="GPTKIT_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/* and /metrics."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="An adapter (gptkit finetune --lora-rank) of --ckpt, applied unmerged."),
    chat_template: Optional[str] = typer.Option(None, "--chat-template", help="Chat template for a model that records none: plain | alpaca | FILE."),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="The model id clients send (default: the checkpoint's file name)."),
    max_batch_size: int = typer.Option(8, "--max-batch-size", min=1, help="Rows decoded together (continuous batching)."),
    max_queue: int = typer.Option(64, "--max-queue", min=0, help="Rows waiting for a batch slot; more get 503 + Retry-After."),
    max_tokens: int = typer.Option(1024, "--max-tokens", min=1, help="Most new tokens one choice may ask for."),
    max_prompt_tokens: Optional[int] = typer.Option(None, "--max-prompt-tokens", min=1, help="Longest prompt in tokens (default and most: the model's context)."),
    max_n: int = typer.Option(16, "--max-n", min=1, help="Most choices (n x prompts) per request."),
    max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", min=1, help="Largest request body; larger gets 413."),
    drain_timeout: float = typer.Option(60.0, "--drain-timeout", min=0.0, help="Seconds SIGTERM waits for in-flight requests."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | float32 | bfloat16 | float16."),
    log_level: str = typer.Option("info", "--log-level", help="critical | error | warning | info | debug (debug logs every request)."),
) -> None:
    r"""Serve a checkpoint over HTTP, OpenAI-compatible: /v1/completions, /v1/chat/completions, /v1/models,
    /health, /metrics, and a playground page at /.

    Listens on 127.0.0.1 unless --host says otherwise. SIGTERM or Ctrl-C stops accepting connections,
    finishes the requests in flight, and exits. Needs the serve extra: pip install 'gptkit\[serve]'.
    """
    from gptkit.serve import ServeSettings
    from gptkit.serve import serve as run_server

    run_server(ServeSettings(
        ckpt=ckpt, host=host, port=port, api_key=api_key or None, device=device, dtype=dtype, adapter=adapter,
        chat_template=chat_template, model_name=model_name, max_batch_size=max_batch_size, max_queue=max_queue,
        max_tokens=max_tokens, max_prompt_tokens=max_prompt_tokens, max_n=max_n, max_body_bytes=max_body_bytes,
        drain_timeout=drain_timeout, log_level=log_level,
    ))
