"""Instruction data, `gptkit prepare instructions`: JSONL examples -> tokens + loss mask + example index.

Each line of the input is one example, in any of three layouts (they may be mixed):

    {"prompt": "2+3", "completion": "5"}
    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "2+3"},
                  {"role": "assistant", "content": "5"}, ...]}
    {"instruction": "Add the numbers", "input": "2 3", "output": "5"}     (Alpaca; "input" may be empty)

Every example becomes a conversation, rendered with a prompt template (chat_template.py). The loss
counts the completion tokens only: the assistant's words (and the <|endoftext|> after them, so the
model learns to stop), never the prompt's, which the model is given, not asked to write.

How examples become windows: one example per row, right-padded. A row holds one example from its
first token; its padding has target -100 (ignored by the loss, like prompt positions). Packing
several examples into a row would waste fewer positions, but then a completion would attend to the
previous example's prompt unless attention were masked per example, which the model does not do;
padding keeps every completion conditioned on its own prompt alone, and the rows of short examples
are cheap anyway. Examples longer than the context are skipped (with a count) or refused.

Rules for bad input (never silent):
    a malformed line (not JSON, not an object, no known layout, a field of the wrong type, an unknown
    role, no assistant message)          one GptkitError naming the file, the line number and the fault
    a blank line                         ignored (it holds no example)
    an empty completion                  skipped and counted ("skipped" in meta.json, and logged)
    unknown keys (e.g. "id")             ignored, and counted per key ("ignored_keys" in meta.json)
    longer than --block-size + 1 tokens  on_too_long="skip" (default): skipped and counted; "error": refused

The data folder (see instruction_data.py for reading it):

    train_000000.bin, val_000000.bin       the examples' tokens, one after another (shards.py's format)
    train_examples.npy, val_examples.npy   int64 (N, 2): each example's start in the split and its length
    train_trained.npy, val_trained.npy     uint8, one per token: 1 where the token is a completion token
    meta.json                              kind "instructions", the template, block_size, the counts
    tokenizer.json
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from gptkit.chat_template import ROLES, resolve_template, segments
from gptkit.errors import GptkitError, UsageError
from gptkit.shards import SPLITS, ShardWriter, token_dtype_for
from gptkit.tokenizers import Tokenizer, load_tokenizer

KIND = "instructions"
LAYOUTS = {"prompt/completion": ("prompt", "completion"), "messages": ("messages",), "alpaca": ("instruction", "output")}
KNOWN_KEYS = {"prompt", "completion", "messages", "instruction", "input", "output"}
DEFAULT_BLOCK_SIZE = 1024
ON_TOO_LONG = ("skip", "error")


class LineError(Exception):
    """What is wrong with one line; read_examples adds the file and line number."""


@dataclass
class Example:
    line: int
    messages: list[dict]


def _string(value, what: str) -> str:
    if not isinstance(value, str):
        raise LineError(f"{what} must be a string, not {type(value).__name__}")
    return value


def to_messages(record: object) -> list[dict]:
    """One JSON record in any layout -> a conversation [{"role", "content"}, ...] ending with the assistant."""
    if not isinstance(record, dict):
        raise LineError(f"expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        raw = record["messages"]
        if not isinstance(raw, list) or not raw:
            raise LineError('"messages" must be a non-empty list of {"role", "content"} objects')
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise LineError(f'message {i} must be an object with "role" and "content"')
            if m["role"] not in ROLES:
                raise LineError(f"message {i} has the unknown role {m['role']!r} (known: {', '.join(ROLES)})")
            messages.append({"role": m["role"], "content": _string(m["content"], f"message {i}'s content")})
        if messages[-1]["role"] != "assistant":
            raise LineError("the last message must be the assistant's (it is what the model learns to write)")
        return messages
    if "prompt" in record and "completion" in record:
        prompt = _string(record["prompt"], '"prompt"')
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": _string(record["completion"], '"completion"')}]
    if "instruction" in record and "output" in record:
        instruction = _string(record["instruction"], '"instruction"')
        extra = _string(record.get("input", ""), '"input"')
        prompt = f"{instruction}\n{extra}" if extra else instruction
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": _string(record["output"], '"output"')}]
    layouts = "; ".join(f"{name}: {', '.join(keys)}" for name, keys in LAYOUTS.items())
    raise LineError(f"no known layout in the keys {', '.join(sorted(record)) or '(none)'} (expected {layouts})")


def read_examples(path: str | Path, counts: Counter, ignored_keys: Counter):
    """Yield the examples of a JSONL file, one line at a time (flat memory). Blank lines are ignored;
    empty completions are skipped into counts["empty_completion"]; unknown keys are counted."""
    path = Path(path)
    if not path.is_file():
        raise GptkitError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
                if not text.strip():
                    continue
                record = json.loads(text)
                messages = to_messages(record)
            except UnicodeDecodeError as e:
                raise GptkitError(f"{path}, line {number}: not valid UTF-8 ({e.reason})") from None
            except json.JSONDecodeError as e:
                raise GptkitError(f"{path}, line {number}: not valid JSON ({e.msg}, column {e.colno})", hint="one JSON object per line") from None
            except LineError as e:
                raise GptkitError(f"{path}, line {number}: {e}", hint="see `gptkit prepare instructions --help` for the layouts") from None
            ignored_keys.update(k for k in record if k not in KNOWN_KEYS)
            if not any(m["content"].strip() for m in messages if m["role"] == "assistant"):
                counts["empty_completion"] += 1
                continue
            yield Example(number, messages)


def encode_example(tokenizer: Tokenizer, template: dict, messages: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, trained) of one conversation: each piece of the template's rendering is encoded on its
    own, so the prompt/completion boundary is a token boundary; <|endoftext|> follows each completion."""
    ids: list[int] = []
    trained: list[int] = []
    eot = tokenizer.eot_id
    for text, is_completion in segments(template, messages):
        piece = tokenizer.encode_ordinary(text)
        ids += piece
        trained += [int(is_completion)] * len(piece)
        if is_completion and eot is not None:
            ids.append(eot)
            trained.append(1)
    return np.asarray(ids, dtype=np.int64), np.asarray(trained, dtype=np.uint8)


def _default_block_size(tokenizer_ref: str) -> int:
    """The model's context length when --tokenizer is a checkpoint or a Hugging Face GPT-2 folder (its
    examples must fit that model), else 1024."""
    path = Path(tokenizer_ref)
    if path.is_dir() and (path / "config.json").is_file() and not (path / "ckpt.safetensors").exists():
        try:
            return int(json.loads((path / "config.json").read_text(encoding="utf-8")).get("n_positions", DEFAULT_BLOCK_SIZE))
        except (ValueError, TypeError, UnicodeDecodeError):
            return DEFAULT_BLOCK_SIZE
    candidate = path / "ckpt.safetensors" if path.is_dir() else path
    if candidate.suffix == ".safetensors" and candidate.is_file():
        from gptkit.checkpoint_format import read_checkpoint_header

        try:
            return int(json.loads(read_checkpoint_header(candidate).metadata["model_config"])["block_size"])
        except (KeyError, ValueError, TypeError):
            pass
    return DEFAULT_BLOCK_SIZE


def prepare_instructions(
    jsonl_path: str | Path,
    out: str | Path,
    tokenizer_ref: str | Tokenizer,
    template: str | dict | None = None,
    *,
    block_size: int | None = None,
    val_fraction: float = 0.1,
    on_too_long: str = "skip",
    shard_tokens: int = 100_000_000,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Tokenize a JSONL file of examples into an instruction data folder; returns its meta.json.

    `tokenizer_ref` is what --tokenizer accepts (usually the checkpoint to fine-tune); `block_size`
    the context (default: that checkpoint's, else 1024): an example may have up to block_size + 1
    tokens (the model reads all but the last). The last `val_fraction` of the examples validate."""
    from gptkit.prepare import _check_out, _finish, _staging, check_val_fraction

    check_val_fraction(val_fraction)
    if on_too_long not in ON_TOO_LONG:
        raise UsageError(f"on_too_long must be one of {', '.join(ON_TOO_LONG)} (got {on_too_long!r})")
    out = _check_out(out)
    tokenizer = tokenizer_ref if isinstance(tokenizer_ref, Tokenizer) else load_tokenizer(tokenizer_ref)
    if block_size is None:
        block_size = DEFAULT_BLOCK_SIZE if isinstance(tokenizer_ref, Tokenizer) else _default_block_size(str(tokenizer_ref))
    if block_size < 1:
        raise UsageError(f"--block-size must be at least 1 (got {block_size})")
    template = resolve_template(template)
    counts, ignored_keys = Counter(), Counter()

    # First pass: count the examples, to place the train/val cut without holding them in memory.
    total = sum(1 for _ in read_examples(jsonl_path, Counter(), Counter()))
    if total == 0:
        raise GptkitError(f"{jsonl_path} holds no examples with a completion")
    n_val = int(round(total * val_fraction))
    if val_fraction > 0 and total >= 2:
        n_val = min(max(n_val, 1), total - 1)  # at least one of each when there is a choice
    cut = total - n_val

    dtype = token_dtype_for(tokenizer.vocab_size)
    with _staging(out) as staging:
        writers = {s: ShardWriter(staging, s, dtype, shard_tokens) for s in SPLITS}
        index = {s: [] for s in SPLITS}
        trained = {s: [] for s in SPLITS}
        longest = 0
        for i, example in enumerate(read_examples(jsonl_path, counts, ignored_keys)):
            try:
                ids, mask = encode_example(tokenizer, template, example.messages)
            except GptkitError as e:
                raise GptkitError(f"{jsonl_path}, line {example.line}: {e.message}", hint=e.hint) from None
            if len(ids) > block_size + 1:
                if on_too_long == "error":
                    raise GptkitError(
                        f"{jsonl_path}, line {example.line}: the example has {len(ids):,} tokens, more than the "
                        f"context of {block_size:,} (+1) holds",
                        hint="raise --block-size (up to the model's), shorten the example, or use --too-long skip",
                    )
                counts["too_long"] += 1
                continue
            split = "train" if i < cut else "val"
            index[split].append((writers[split].total, len(ids)))
            writers[split].write(ids)
            trained[split].append(mask)
            longest = max(longest, len(ids))
        splits = {}
        for s in SPLITS:
            names = writers[s].close()
            examples = np.asarray(index[s], dtype=np.int64).reshape(-1, 2)
            mask = np.concatenate(trained[s]) if trained[s] else np.zeros(0, dtype=np.uint8)
            np.save(staging / f"{s}_examples.npy", examples, allow_pickle=False)
            np.save(staging / f"{s}_trained.npy", mask, allow_pickle=False)
            splits[s] = {
                "tokens": writers[s].total, "shards": names, "checksums": writers[s].checksums,
                "examples": len(examples), "trained_tokens": int(mask.sum()),
                "index": f"{s}_examples.npy", "trained": f"{s}_trained.npy",
            }
            log(f"{s}: {len(examples):,} examples, {writers[s].total:,} tokens ({int(mask.sum()):,} trained)")
        if not splits["train"]["examples"]:
            raise GptkitError(
                f"no training example fits the context of {block_size:,} tokens ({counts['too_long']:,} too long)",
                hint="raise --block-size, or use shorter examples",
            )
        for reason, n in sorted(counts.items()):
            log(f"skipped {n:,} example(s): {reason.replace('_', ' ')}")
        for key, n in sorted(ignored_keys.items()):
            log(f"ignored the unknown key {key!r} in {n:,} example(s)")
        source = {"name": "instructions", "files": [{"path": str(jsonl_path)}]}
        extra = {
            "kind": KIND, "template": template, "block_size": block_size, "longest_example": longest,
            "skipped": dict(counts), "ignored_keys": dict(ignored_keys), "on_too_long": on_too_long,
        }
        return _finish(staging, out, tokenizer, splits, source, extra)
