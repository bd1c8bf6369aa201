#!/usr/bin/env python3
"""Fine-tuning, proved on a task: teach the tiny Shakespeare char model to uppercase a word.

    python examples/finetune_task.py                          # trains the base model first (a few CPU minutes)
    python examples/finetune_task.py --base out/shakespeare/ckpt.safetensors   # reuse a trained char model
    GPTKIT_SHAKESPEARE=path/to/tinyshakespeare.txt python examples/finetune_task.py   # offline corpus

Every step is the command line a user runs (`python -m gptkit ...`, so this file needs only gptkit):

    gptkit prepare shakespeare --out WORK/shakespeare           (unless --base)
    gptkit train --preset shakespeare-char-cpu-fast ...          (unless --base)
    gptkit prepare instructions WORK/task/train.jsonl --tokenizer BASE --out WORK/task/data
    gptkit finetune --ckpt BASE --data WORK/task/data --out WORK/full ...              full fine-tuning
    gptkit finetune --ckpt BASE --data WORK/task/data --out WORK/lora --lora-rank R ...  LoRA

The task: {"prompt": "gentle", "completion": "GENTLE"}, rendered by the default template as
"Question: gentle\\nAnswer: GENTLE\\n". The words are Shakespeare's own (lowercase, 3 to 6 letters);
the held-out words never appear in the fine-tuning data, so a model that scores on them has learned
the rule (copy each letter, in its capital form), not a list of answers. Scoring asks each held-out
question as `gptkit sample --chat` does (the checkpoint's recorded template, greedy decoding, the
answer cut where the template ends it) and counts exact matches.

Prints one table: exact-match accuracy of the base model, after full fine-tuning and after LoRA, with
each fine-tuning's iterations and wall time. Results are in docs/finetuning.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Tuned on a shared 2-core CPU (docs/finetuning.md): each reaches >= 90% on the held-out words.
# Near-zero losses make a batch at 3x the recent mean ordinary noise, so the spike test is off (NaN/inf
# are still caught).
FULL_OPTIONS = "--max-iters 500 --lr 2e-3 --min-lr 2e-4 --warmup-iters 20 --batch-size 16 --loss-spike-factor 0"
LORA_OPTIONS = "--max-iters 800 --lr 3e-3 --min-lr 3e-4 --warmup-iters 20 --batch-size 16 --loss-spike-factor 0 --lora-rank 32 --lora-alpha 64"
MIN_LEN, MAX_LEN = 3, 6  # word lengths: longer words take the model longer to learn


# ---------------------------------------------------------------------------------------------------
# The task


def task_words(text: str, min_len: int = MIN_LEN, max_len: int = MAX_LEN) -> list[str]:
    """The distinct lowercase words of `text` (letters only, min_len..max_len long), sorted."""
    return sorted({w for w in re.findall(r"\b[a-z]+\b", text) if min_len <= len(w) <= max_len})  # not "ueen" of "Queen"


def make_task(words: list[str], num_train: int, num_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, test) examples {"prompt": word, "completion": WORD} over disjoint sets of words."""
    if num_train + num_test > len(words):
        raise ValueError(f"{num_train} + {num_test} examples need more than the {len(words)} words given")
    shuffled = list(words)
    random.Random(seed).shuffle(shuffled)
    examples = [{"prompt": w, "completion": w.upper()} for w in shuffled[: num_train + num_test]]
    return examples[:num_train], examples[num_train:]


def write_jsonl(path: Path, examples: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------
# Scoring


def answers(ckpt: str | Path, questions: list[str], adapter: str | Path | None = None, max_new_tokens: int = 16) -> list[str]:
    """Each question asked as `gptkit sample --chat --temperature 0` asks it: rendered with the
    checkpoint's template (or, for a model without one, the default template, which is what the
    fine-tuning data used), greedy tokens, cut where the template ends an answer."""
    from gptkit.chat_template import DEFAULT_TEMPLATE, apply_template, completion_end
    from gptkit.generate import engine_for
    from gptkit.inference import load_model
    from gptkit.sampling import SamplingParams

    loaded = load_model(ckpt, device="cpu", adapter=adapter)
    template = loaded.chat_template or DEFAULT_TEMPLATE  # the base model was never told a template
    engine = engine_for(loaded, batch_size=32)  # all questions decode together
    greedy = SamplingParams(max_new_tokens=max_new_tokens, temperature=0, stop=tuple(filter(None, [completion_end(template)])))
    prompts = [engine.tokenizer.encode(apply_template(template, question)) for question in questions]
    return [completion.text for completion in engine.generate(prompts, greedy)]


def exact_match(ckpt: str | Path, examples: list[dict], adapter: str | Path | None = None, max_new_tokens: int | None = None) -> float:
    """The share of examples whose greedy answer is exactly the completion. Answers are cut at
    max_new_tokens (default: 2 more than the longest completion, room for the ending line break)."""
    max_new_tokens = max_new_tokens or max(len(e["completion"]) for e in examples) + 2
    replies = answers(ckpt, [e["prompt"] for e in examples], adapter, max_new_tokens)
    return sum(r == e["completion"] for r, e in zip(replies, examples)) / len(examples)


# ---------------------------------------------------------------------------------------------------
# The journey, through the command line


def gptkit(*args: str | Path) -> str:
    """Run `python -m gptkit ARGS`; return its stdout (the data: a path, JSON). Stops on failure."""
    command = [sys.executable, "-m", "gptkit", *map(str, args)]
    print("$ gptkit " + " ".join(map(str, args)), file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env)  # stderr: the live log
    if proc.returncode != 0:
        raise SystemExit(f"gptkit {args[0]} failed (exit {proc.returncode})")
    return proc.stdout.strip()


def finetune_run(base: Path, data: Path, out: Path, options: list[str]) -> tuple[dict, float]:
    """`gptkit finetune` (its --json result) and its wall time in seconds, process start included."""
    started = time.perf_counter()
    result = json.loads(gptkit("finetune", "--ckpt", base, "--data", data, "--out", out, "--device", "cpu", "--overwrite",
                               "--eval-interval", "100", "--eval-iters", "5", "--log-interval", "25", *options, "--json"))
    return result, time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="A trained char checkpoint to fine-tune (default: train one).")
    parser.add_argument("--work", type=Path, default=Path("out/finetune_task"), help="Folder for data and runs.")
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--test-examples", type=int, default=200)
    parser.add_argument("--base-iters", type=int, default=None, help="Iterations of the base model (default: the preset's).")
    parser.add_argument("--full-options", default=FULL_OPTIONS, help="gptkit finetune options of the full run.")
    parser.add_argument("--lora-options", default=LORA_OPTIONS, help="gptkit finetune options of the LoRA run.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    work = args.work

    if args.base is None:
        data = Path(gptkit("prepare", "shakespeare", "--out", work / "shakespeare"))
        extra = ["--max-iters", str(args.base_iters), "--lr-decay-iters", str(args.base_iters)] if args.base_iters else []
        args.base = Path(gptkit("train", "--preset", "shakespeare-char-cpu-fast", "--data", data, "--out", work / "base",
                                "--device", "cpu", "--overwrite", *extra))
    words = task_words(shakespeare_text())
    train, test = make_task(words, args.train_examples, args.test_examples, args.seed)
    task = work / "task"
    write_jsonl(task / "test.jsonl", test)
    data = Path(gptkit("prepare", "instructions", write_jsonl(task / "train.jsonl", train), "--tokenizer", args.base,
                       "--out", task / "data"))

    rows = [("base model", exact_match(args.base, test), None, None)]
    print(f"base model: {rows[0][1]:.1%} exact match on {len(test)} held-out words", file=sys.stderr)
    for name, options in (("full fine-tuning", args.full_options), ("LoRA", args.lora_options)):
        out = work / ("full" if name.startswith("full") else "lora")
        result, seconds = finetune_run(args.base, data, out, options.split())
        rows.append((name, exact_match(result["checkpoint"], test), result["step"], seconds))
        print(f"{name}: {rows[-1][1]:.1%}", file=sys.stderr)

    print(f"\nuppercase a word: exact match on {len(test)} held-out words (greedy)\n")
    print(f"| {'model':<17} | accuracy | iterations | wall time |")
    print(f"|{'-' * 19}|---------:|-----------:|----------:|")
    for name, accuracy, steps, seconds in rows:
        print(f"| {name:<17} | {accuracy:>7.1%} | {steps if steps is not None else '':>10} | "
              f"{f'{seconds:.0f} s' if seconds is not None else '':>9} |")
    return {name: {"accuracy": acc, "iterations": steps, "seconds": sec} for name, acc, steps, sec in rows}


def shakespeare_text() -> str:
    """Tiny Shakespeare's text, as `gptkit prepare shakespeare` finds it (GPTKIT_SHAKESPEARE, else the cache)."""
    from gptkit.sources import DATASETS, fetch_dataset, read_text_file

    return read_text_file(os.environ.get("GPTKIT_SHAKESPEARE") or fetch_dataset(DATASETS["shakespeare"]))


if __name__ == "__main__":
    main()
