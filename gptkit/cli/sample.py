"""`gptkit sample`: generate text from a checkpoint; only the text goes to stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from gptkit.cli.app import app
from gptkit.console import emit_json as _emit_json
from gptkit.errors import UsageError


@app.command(
    epilog="Examples:\n\n"
    "  gptkit sample --ckpt out/ckpt.safetensors\n\n"
    "  gptkit sample --prompt 'ROMEO:' --max-new-tokens 200 --temperature 0.7 --seed 1\n\n"
    "  echo 'JULIET:' | gptkit sample --num-samples 3 --json\n\n"
    "  gptkit sample --ckpt out/ft/ckpt.safetensors --chat 'hello' --temperature 0",
)
def sample(
    ckpt: Path = typer.Option(Path("out/ckpt.safetensors"), "--ckpt", help="Checkpoint to sample from."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="An adapter (gptkit finetune --lora-rank) of --ckpt, applied unmerged."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Text to continue."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="Read the prompt from a file."),
    chat: Optional[str] = typer.Option(None, "--chat", help="Ask a model fine-tuned on instructions this question (its template); print only the answer."),
    num_samples: int = typer.Option(1, "--num-samples", "-n", min=1, help="How many samples."),
    max_new_tokens: int = typer.Option(500, "--max-new-tokens", min=1, help="Tokens to generate per sample."),
    temperature: float = typer.Option(0.8, "--temperature", min=0.0, help="0 = greedy; <1 safer, >1 wilder."),
    top_k: int = typer.Option(200, "--top-k", min=0, help="Sample only among the k likeliest tokens (0: all)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Same seed, same text."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    echo: bool = typer.Option(True, "--echo/--no-echo", help="Print the prompt before its continuation."),
    stop_at_eot: bool = typer.Option(True, "--stop-at-eot/--no-stop-at-eot", help="End a sample at <|endoftext|>."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per sample: prompt, completion."),
) -> None:
    """Generate text from a checkpoint. Only the text goes to stdout.

    Without --prompt or --prompt-file, the prompt is read from stdin when it is a pipe, else it is a
    newline, as in nanoGPT.
    """
    from gptkit.generate import sample_texts

    if prompt is not None and prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    if chat is not None and (prompt, prompt_file) != (None, None):
        raise UsageError("--chat is the prompt: give it without --prompt or --prompt-file")
    if chat is not None:
        prompt, echo = chat, False
    if prompt_file is not None:
        from gptkit.sources import read_text_file

        prompt = read_text_file(prompt_file)
    elif prompt is None and sys.stdin is not None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    for index, (prompt_text, pieces) in enumerate(
        sample_texts(ckpt, prompt, num_samples, max_new_tokens, temperature, top_k or None, seed, device, stop_at_eot, adapter=adapter, chat=chat is not None)
    ):
        if as_json:
            _emit_json({"sample": index, "prompt": prompt_text, "completion": "".join(pieces)})
            continue
        if index > 0:
            sys.stdout.write("\n---\n")
        if echo:
            sys.stdout.write(prompt_text)
        for piece in pieces:  # stream as the tokens arrive
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
