"""The README's commands work verbatim after its set-up command.

The test reads every command line of the README's code blocks, runs the set-up (`examples/shakespeare.sh`,
on the local tiny Shakespeare and for a handful of iterations: GPTKIT_SHAKESPEARE and MAX_ITERS), then runs
each command as written, in a bash with `set -o pipefail`, in the folder the set-up ran in. The input
files the README names as the reader's own (input.txt, notes/, tasks.jsonl, ...) are made first, small.

Every command is either run (RUN, in this order) or skipped with its reason (SKIPPED): a command added to
the README without a decision fails the test, so the list stays honest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, find_shakespeare

PREFIXES = ("gptkit ", "echo ", "cat ", "torchrun ", "python3 ")

SETUP = "python3 -m pip install -q -e . && examples/shakespeare.sh"
SLOW = "slow on a CPU: trains a preset for its full length (500-2000 iterations); the set-up trains the same way for MAX_ITERS"
GGUF = ("the set-up's model reads characters and llama.cpp has no character tokenizer: refused by name, as the README "
        "says (tests/test_export_gguf.py exports byte-level BPE models to llama.cpp)")
SKIPPED = {
    SETUP: "the set-up itself: run first, without the pip install (the test runs in the installed package)",
    "python3 -m pip install -q -e '.[dev]' && python3 -m pytest -q": "runs this test suite",
    "gptkit prepare shakespeare --tokenizer gpt2 --out data/shakespeare-gpt2": "network: tiktoken downloads gpt2's files once",
    "gptkit prepare text shards/*.parquet --tokenizer gpt2 --out data/fineweb": "network (gpt2's files) and the reader's own Parquet shards",
    "gptkit prepare hf HuggingFaceFW/fineweb-edu --name sample-10BT --tokenizer gpt2 --out data/fineweb-edu": "network: streams a Hugging Face dataset",
    "gptkit train --device cuda": "needs a GPU",
    "gptkit train --init-from gpt2 --max-iters 0 --out out/gpt2": "network: downloads GPT-2's weights",
    "torchrun --standalone --nproc-per-node 8 -m gptkit train --preset gpt2-124m --data data/owt --grad-accum 5": "needs 8 GPUs and OpenWebText",
    "gptkit train": SLOW,
    "gptkit train --preset shakespeare-char-cpu --max-iters 500 --out out/short": SLOW,
    "gptkit train --config my.toml --lr 3e-4": SLOW,
    "gptkit train --preset shakespeare-char-cpu --max-iters 500 --out out/short --resume": "resumes out/short, which the slow line above trains",
    "gptkit train --preset shakespeare-char-cpu --out out/job --resume-auto": SLOW,
    "gptkit finetune --ckpt out/ --data data/tasks --out out/ft --lora-rank 8": "slow on a CPU: 500 fine-tuning iterations",
    "gptkit finetune --ckpt out/ --data data/new-text --out out/ft-full --freeze-embeddings": "slow on a CPU: 500 fine-tuning iterations",
    "gptkit eval --ckpt out/ckpt.safetensors --adapter out/ft/adapter.safetensors": "needs the adapter of the slow LoRA line above",
    "gptkit eval --ckpt out/best.safetensors --split train --json": "slow on a CPU: walks the whole 1M-token train split",
    "gptkit eval": "the set-up's own last step (examples/shakespeare.sh evaluates its checkpoint the same way)",
    "gptkit sample": "the same as `gptkit sample --ckpt out/ckpt.safetensors`, run below",
    "gptkit prepare shakespeare": "the set-up's own first step (examples/shakespeare.sh runs it)",
    'gptkit sample --ckpt out/ft/ckpt.safetensors --chat "2+3" --temperature 0': "asks the fine-tuned model of the slow LoRA line above",
    "gptkit serve --ckpt out/ft/ckpt.safetensors": "a server that runs until stopped, on the fine-tuned model of the slow line above "
    "(tests/test_serve.py starts one and calls it with the openai client)",
    "gptkit ablate --vary mlp=gelu,swiglu --max-iters 200 --lr-decay-iters 200 --out out/ablate-mlp": "slow on a CPU: 6 runs of 200 iterations (tests/test_ablate.py runs a tiny ablation)",
    "gptkit ablate --vary optimizer=adamw,muon --seeds 1,7,42 --out out/ablate-opt": "slow on a CPU: 6 runs of the full preset",
    "gptkit export --ckpt out/ckpt.safetensors --format gguf --out model.gguf --dtype float16": GGUF,
}
RUN = [
    "gptkit prepare shakespeare --source tinyshakespeare.txt",
    "gptkit prepare text notes/ book.txt --out data/mine --val-fraction 0.05",
    "gptkit prepare verify data/shakespeare",
    "gptkit prepare instructions tasks.jsonl --tokenizer out/ --out data/tasks",
    "gptkit train --print-config > my.toml",
    "gptkit sample --ckpt out/ckpt.safetensors",
    'gptkit sample --prompt "ROMEO:" --max-new-tokens 200 --temperature 0.7 --top-k 50 --seed 1',
    'gptkit sample --prompt "ROMEO:" --top-p 0.9 --repetition-penalty 1.2 --stop "\\n\\n"',
    'echo "JULIET:" | gptkit sample --num-samples 3 --json | jq -r .completion',
    'gptkit sample --prompt "ROMEO:" --json --logprobs 3',
    "gptkit sample --jsonl prompts.jsonl > outputs.jsonl",
    "gptkit inspect --ckpt out/",
    "gptkit inspect --preset gpt2-124m --vocab-size 50257 --batch-size 12 --dtype bfloat16",
    'gptkit inspect --ckpt out/ --attention "ROMEO: But soft" --out attention/ --layer 1 --head 2',
    'gptkit inspect --ckpt out/ --next-token "ROMEO: But so"',
    "gptkit inspect --compare shakespeare-char-cpu out/",
    "gptkit tokenize train --kind bpe --vocab-size 4096 input.txt --out tok/",
    "gptkit tokenize train --kind sp-unigram --vocab-size 4096 corpus/ --out tok-sp/",
    "gptkit tokenize train --kind char --unk input.txt --out tok-char/",
    'gptkit tokenize inspect --tokenizer tok/ "ROMEO: But, soft! what light through yonder window breaks?"',
    "gptkit tokenize inspect --tokenizer tok/ input.txt --json | jq .text.bytes_per_token",
    "cat a.txt | gptkit tokenize encode --tokenizer tok/ | gptkit tokenize decode --tokenizer tok/ | cmp - a.txt",
    "gptkit tokenize encode --tokenizer tok/ --format bin big.txt > big.bin",
    "gptkit tokenize decode --tokenizer tok/ --format bin big.bin",
    "gptkit prepare shakespeare --tokenizer bpe:4096 --out data/shakespeare-bpe",
    "gptkit prepare text corpus/ --tokenizer sp-unigram:8000 --out data/corpus",
    "gptkit prepare text new/ --tokenizer out/ckpt.safetensors --out data/new",
    "gptkit export --ckpt out/ckpt.safetensors --format hf --out exported/hf",
    "gptkit export --ckpt out/ckpt.safetensors --format onnx --out exported/onnx",
    "gptkit report out/baseline",
    "gptkit report out/lr-1e-3 out/lr-3e-3 --png compare.png > compare.md",
]
NEEDS = {  # modules a command needs beyond the core (extras); missing ones skip it
    "sp-unigram": ["sentencepiece"], "gptkit report": ["matplotlib"], "--attention": ["matplotlib"], "--format onnx": ["onnx", "onnxscript"],
}


def readme_commands() -> list[str]:
    """Every command line of the README's code blocks, without its trailing comment."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.startswith(PREFIXES):
                command = re.sub(r"\s+#\s.*$", "", line).strip()
                if command not in commands:
                    commands.append(command)
    return commands


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    commands = readme_commands()
    assert len(commands) > 30
    undecided = [c for c in commands if c not in SKIPPED and c not in RUN]
    assert not undecided, f"README commands with no decision in tests/test_readme.py: {undecided}"
    stale = [c for c in [*SKIPPED, *RUN] if c not in commands]
    assert not stale, f"no longer in the README: {stale}"


def _make_the_readers_files(folder: Path, shakespeare: str) -> None:
    """The files the README's examples call the reader's own, made small from tiny Shakespeare."""
    (folder / "tinyshakespeare.txt").write_text(shakespeare, encoding="utf-8")
    for name, start, size in (("input.txt", 0, 30_000), ("a.txt", 30_000, 5_000), ("big.txt", 35_000, 20_000), ("book.txt", 60_000, 20_000)):
        (folder / name).write_text(shakespeare[start : start + size], encoding="utf-8")
    for sub, start in (("notes", 80_000), ("corpus", 120_000), ("new", 160_000)):
        (folder / sub).mkdir()
        for i in range(2):
            (folder / sub / f"part{i}.txt").write_text(shakespeare[start + i * 10_000 : start + (i + 1) * 10_000], encoding="utf-8")
    (folder / "prompts.jsonl").write_text('{"prompt": "ROMEO:"}\n{"prompt": "JULIET:", "temperature": 0, "max_new_tokens": 20}\n', encoding="utf-8")
    lines = [l for l in shakespeare.splitlines() if l.strip()][:200]
    with open(folder / "tasks.jsonl", "w", encoding="utf-8") as f:
        for prompt, completion in zip(lines[::2], lines[1::2]):
            f.write(json.dumps({"prompt": prompt[:20] + "\n", "completion": completion[:20]}) + "\n")  # fits a context of 64


def _missing(command: str) -> list[str]:
    import importlib.util

    modules = [m for key, mods in NEEDS.items() if key in command for m in mods]
    return [m for m in modules if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="module")
def after_setup(tmp_path_factory):
    """The folder the set-up command ran in, and the environment it ran with."""
    shakespeare = find_shakespeare()
    if shakespeare is None:
        pytest.skip("tiny Shakespeare is not available offline (../shared/data/tinyshakespeare.txt or GPTKIT_SHAKESPEARE)")
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO_ROOT / "examples", folder / "examples")
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPTKIT_")}
    env.update(
        PATH=bin_dir + os.pathsep + env.get("PATH", ""), GPTKIT_SHAKESPEARE=str(shakespeare), MAX_ITERS="4",
        GPTKIT_CACHE=str(folder / ".cache"), OMP_NUM_THREADS="1", NO_COLOR="1", PYTHONPATH=str(REPO_ROOT),
    )
    if shutil.which("gptkit", path=env["PATH"]) is None:
        pytest.skip("the gptkit console script is not installed (pip install -e .)")
    setup = SETUP.split(" && ", 1)[1]  # without the pip install
    proc = subprocess.run(["bash", "-c", setup], cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ROMEO:" in proc.stdout and "val_loss" in proc.stdout
    _make_the_readers_files(folder, shakespeare.read_text(encoding="utf-8"))
    for name in ("baseline", "lr-1e-3", "lr-3e-3"):  # the runs `gptkit report` compares: copies of the set-up's
        shutil.copytree(folder / "out", folder / "out" / name, ignore=shutil.ignore_patterns(*["baseline", "lr-*"]))
    return folder, env


def test_the_readme_commands_run_verbatim_after_the_setup(after_setup):
    folder, env = after_setup
    failures, skipped = [], []
    for command in RUN:
        missing = _missing(command)
        if missing or ("jq " in command and shutil.which("jq") is None):
            skipped.append(f"{command} (missing: {', '.join(missing) or 'jq'})")
            continue
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or "Traceback" in proc.stderr:
            failures.append(f"{command}\n  exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
    assert not failures, "\n".join(failures)
    if skipped:
        pytest.skip("ran every command but these, whose extras are not installed: " + "; ".join(skipped))
