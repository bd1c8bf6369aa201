"""`gptkit sample`: generate text from a checkpoint; only the text goes to stdout.

Three outputs: streamed plain text (the default), --json (one object per sample) and --jsonl (one prompt
per input line, one object per output line, batched through the engine). The parts: reading the prompt,
the sampling controls (one dict of SamplingParams fields), then one printer per output.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from gptkit.cli.app import app
from gptkit.console import emit_json as _emit_json
from gptkit.console import log
from gptkit.errors import GptkitError, UsageError


class _Progress:
    """What is being written, so Ctrl-C can end the half-written line and say what it stopped."""

    def __init__(self, total: int):
        self.total, self.sample, self.tokens, self.line_open = total, 0, 0, False

    def interrupted(self) -> None:
        if self.line_open:
            sys.stdout.write("\n")
            sys.stdout.flush()
        what = f"sample {self.sample + 1} of {self.total}" if self.total > 1 else "the sample"
        log(f"Interrupted: {what} stopped after {self.tokens} new tokens.")


@app.command(
    epilog="Examples:\n\n"
    "  gptkit sample --ckpt out/ckpt.safetensors\n\n"
    "  gptkit sample --prompt 'ROMEO:' --max-new-tokens 200 --temperature 0.7 --seed 1\n\n"
    "  echo 'JULIET:' | gptkit sample --num-samples 3 --json\n\n"
    "  gptkit sample --prompt 'ROMEO:' --top-p 0.9 --stop '\\n\\n' --json --logprobs 3\n\n"
    "  printf '{\"prompt\": \"ROMEO:\"}\\n{\"prompt\": \"JULIET:\", \"temperature\": 0}\\n' | gptkit sample --jsonl -",
)
def sample(
    ckpt: Path = typer.Option(Path("out/ckpt.safetensors"), "--ckpt", help="Checkpoint to sample from."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="An adapter (gptkit finetune --lora-rank) of --ckpt, applied unmerged."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Text to continue."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="Read the prompt from a file."),
    jsonl: Optional[Path] = typer.Option(
        None, "--jsonl", metavar="FILE|-", help="Prompts as JSON lines ({\"prompt\": ..., optional settings}) from FILE or - (stdin); one JSON line out per sample."
    ),
    num_samples: int = typer.Option(1, "--num-samples", "-n", min=1, help="How many samples (of each prompt)."),
    max_new_tokens: int = typer.Option(500, "--max-new-tokens", min=1, help="Tokens to generate per sample."),
    temperature: float = typer.Option(0.8, "--temperature", min=0.0, help="0 = greedy; <1 safer, >1 wilder."),
    top_k: int = typer.Option(200, "--top-k", min=0, help="Sample only among the k likeliest tokens (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus: the likeliest tokens whose probability adds up to p (1: all)."),
    min_p: float = typer.Option(0.0, "--min-p", min=0.0, max=1.0, help="Drop tokens below min_p x the likeliest one's probability."),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", help="Divide the logits of tokens already in the text (1: off)."),
    frequency_penalty: float = typer.Option(0.0, "--frequency-penalty", help="Minus f x times a token was generated (OpenAI's)."),
    presence_penalty: float = typer.Option(0.0, "--presence-penalty", help="Minus p once a token was generated (OpenAI's)."),
    stop: Optional[List[str]] = typer.Option(None, "--stop", metavar="STR", help="End a sample at this text, never printed (repeatable; \\n and \\t are understood)."),
    stop_at_eot: bool = typer.Option(True, "--stop-at-eot/--no-stop-at-eot", help="End a sample at <|endoftext|>."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Same seed, same text (sample i uses seed + i)."),
    logprobs: Optional[int] = typer.Option(None, "--logprobs", min=0, max=20, help="With --json/--jsonl: each token's logprob and the top N alternatives."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | float32 | bfloat16 | float16 (autocast; auto: float32 on CPU)."),
    quantize: Optional[str] = typer.Option(None, "--quantize", metavar="int8", help="int8: dynamically quantized Linear layers (CPU)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Samples decoded together."),
    echo: bool = typer.Option(True, "--echo/--no-echo", help="Print the prompt before its continuation."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per sample: prompt, completion, tokens, finish_reason."),
) -> None:
    """Generate text from a checkpoint. Only the text goes to stdout.

    Without --prompt, --prompt-file or --jsonl, the prompt is read from stdin when it is a pipe, else it
    is a newline, as in nanoGPT. A sample that ends at <|endoftext|> says so on stderr.
    """
    if logprobs is not None and not (as_json or jsonl is not None):
        raise UsageError("--logprobs needs --json or --jsonl (plain text has nowhere to put them)")
    if jsonl is not None and (prompt is not None or prompt_file is not None):
        raise UsageError("give --jsonl or --prompt/--prompt-file, not both")
    controls = dict(
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k or None, top_p=top_p, min_p=min_p,
        repetition_penalty=repetition_penalty, frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
        stop=tuple(_unescape(s) for s in stop or ()), stop_at_eot=stop_at_eot, logprobs=logprobs,
    )
    if quantize not in (None, "int8"):
        raise UsageError(f"--quantize must be int8 (got {quantize!r})")
    loading = dict(device=device, dtype=dtype, adapter=adapter, batch_size=batch_size, quantize=quantize)
    if jsonl is not None:
        return _sample_jsonl(ckpt, jsonl, num_samples, seed, controls, loading)
    prompt = _read_prompt(prompt, prompt_file)
    _sample_one_prompt(ckpt, prompt, num_samples, seed, controls, loading, echo, as_json)


def _unescape(text: str) -> str:
    """--stop '\\n\\n' means two newlines: a shell passes the backslashes through."""
    import re

    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def _read_prompt(prompt: str | None, prompt_file: Path | None) -> str | None:
    if prompt is not None and prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        from gptkit.sources import read_text_file

        return read_text_file(prompt_file)
    if prompt is None and sys.stdin is not None and not sys.stdin.isatty():
        return sys.stdin.read()
    return prompt


def _sample_one_prompt(ckpt, prompt, num_samples, seed, controls, loading, echo, as_json) -> None:
    """Plain text streamed as it comes (samples separated by ---), or one JSON object per sample."""
    from gptkit.generate import sample_texts

    controls = dict(controls)
    settings = dict(max_new_tokens=controls.pop("max_new_tokens"), temperature=controls.pop("temperature"),
                    top_k=controls.pop("top_k"), stop_at_eot=controls.pop("stop_at_eot"))
    progress = _Progress(num_samples)
    streams = sample_texts(ckpt, prompt, num_samples, seed=seed, **settings, **loading, **controls)
    try:
        for index, (prompt_text, pieces) in enumerate(streams):
            progress.sample, progress.tokens = index, 0
            if as_json:
                completion = "".join(pieces)
                _emit_json({"sample": index, "prompt": prompt_text, **_result(completion, pieces, controls["logprobs"])})
                continue
            if index > 0:
                sys.stdout.write("\n---\n")
            if echo:
                sys.stdout.write(prompt_text)
            progress.line_open = True
            for piece in pieces:  # stream as the tokens arrive
                sys.stdout.write(piece)
                sys.stdout.flush()
                progress.tokens = len(pieces.token_ids)
            sys.stdout.write("\n")
            sys.stdout.flush()
            progress.line_open = False
            if pieces.ended_at_eot:
                log(f"sample {index + 1} ended at <|endoftext|> after {len(pieces.token_ids)} tokens")
    except KeyboardInterrupt:
        progress.interrupted()
        raise typer.Exit(130) from None


def _result(completion: str, stream, logprobs: int | None) -> dict:
    """The JSON fields of one finished sample."""
    out = {"completion": completion, "tokens": len(stream.token_ids), "finish_reason": stream.finish_reason}
    if logprobs is not None:
        out["logprobs"] = _logprob_records(stream.token_ids, stream.logprobs, stream.top_logprobs, stream.decode)
    return out


def _logprob_records(token_ids, logprobs, tops, decode) -> list[dict]:
    records = []
    for token, logprob, top in zip(token_ids, logprobs, tops):
        record = {"token": decode([token]), "id": token, "logprob": logprob}
        if top:
            record["top"] = [{"token": text, "id": i, "logprob": value} for i, text, value in top]
        records.append(record)
    return records


def _sample_jsonl(ckpt, source: Path, num_samples, seed, controls, loading) -> None:
    """One JSON object per input line: its "prompt" and any SamplingParams field as a setting; one JSON
    object per sample, in input order: prompt, completion, tokens, finish_reason (and logprobs)."""
    from gptkit.generate import complete_requests, encode_prompt, open_engine
    from gptkit.sampling import SamplingParams

    lines = _jsonl_lines(source)
    engine = open_engine(ckpt, **loading)
    allowed = SamplingParams.field_names() | {"prompt", "id"}

    def requests():
        for number, item in lines:
            unknown = sorted(set(item) - allowed)
            if unknown:
                raise GptkitError(f"{source}: line {number} has unknown settings: {', '.join(unknown)}",
                                  hint="settings are the SamplingParams fields: " + ", ".join(sorted(SamplingParams.field_names())))
            settings = {**controls, **{k: v for k, v in item.items() if k not in ("prompt", "id")}}
            if isinstance(settings.get("stop"), str):
                settings["stop"] = (settings["stop"],)
            settings["stop"] = tuple(settings.get("stop") or ())
            prompt_text, prompt_ids = encode_prompt(engine.tokenizer, item.get("prompt"), engine.block_size)
            for index in range(num_samples):
                line_seed = settings.get("seed", seed)
                try:
                    params = SamplingParams(**{**settings, "seed": None if line_seed is None else line_seed + index})
                    params.validate()
                except (TypeError, GptkitError) as e:
                    raise GptkitError(f"{source}: line {number}: {getattr(e, 'message', e)}") from None
                meta = {"prompt": prompt_text, **({"id": item["id"]} if "id" in item else {}), **({"sample": index} if num_samples > 1 else {})}
                yield meta, prompt_ids, params

    metas = []

    def pairs():
        for meta, prompt_ids, params in requests():
            metas.append(meta)
            yield prompt_ids, params

    written = 0
    try:
        for completion in complete_requests(engine, pairs()):
            out = {**metas[written], "completion": completion.text, "tokens": len(completion.token_ids), "finish_reason": completion.finish_reason}
            if completion.logprobs is not None:
                tops = completion.top_logprobs or [None] * len(completion.token_ids)
                out["logprobs"] = _logprob_records(completion.token_ids, completion.logprobs, tops, engine.tokenizer.decode)
            _emit_json(out)
            sys.stdout.flush()
            written += 1
    except KeyboardInterrupt:
        log(f"Interrupted: stopped after {written} outputs ({len(metas) - written} started, not written).")
        raise typer.Exit(130) from None


def _jsonl_lines(source: Path):
    """(line number, object) for each non-blank line of FILE or stdin ("-")."""
    import json

    if str(source) == "-":
        stream = sys.stdin
    elif not source.exists():
        raise GptkitError(f"{source} does not exist", hint="give a JSON-lines file, or - to read stdin")
    else:
        stream = source.open(encoding="utf-8")

    def lines():
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise GptkitError(f"{source}: line {number} is not JSON ({e.msg})", hint='each line: {"prompt": "..."}') from None
            if not isinstance(item, dict) or not isinstance(item.get("prompt", ""), str):
                raise GptkitError(f"{source}: line {number} is not an object with a \"prompt\" string", hint='each line: {"prompt": "..."}')
            yield number, item

    return lines()
