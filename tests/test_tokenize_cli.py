"""`gptkit tokenize train|encode|decode|inspect` as a user runs them: real processes and pipes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from tokenizer_fixtures import ROOT, TRICKY_TEXTS, run_gptkit, shakespeare, training_corpus

from gptkit.tokenizers import load_tokenizer

TRICKY = "".join(TRICKY_TEXTS.values()).encode("utf-8")  # accents, emoji, CJK, \r\n, tabs, no final newline


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    corpus = folder / "corpus.txt"
    corpus.write_text(training_corpus()[:100_000], encoding="utf-8")
    result = run_gptkit("tokenize", "train", "--kind", "bpe", "--vocab-size", "400", str(corpus), "--out", str(folder / "tok"))
    assert result.stdout.decode().strip() == str(folder / "tok")  # stdout: the folder, for pipes
    assert b"trained bpe:400" in result.stderr
    return folder / "tok"


def test_train_writes_a_loadable_tokenizer(tok_dir):
    tok = load_tokenizer(tok_dir)
    assert tok.name == "bpe:400" and tok.pattern_name == "gpt4"


@pytest.mark.parametrize("fmt", ["lines", "jsonl", "bin", "npy"])
def test_encode_decode_round_trip_is_byte_exact(tok_dir, tmp_path, fmt):
    source = tmp_path / "a.txt"
    source.write_bytes(TRICKY)
    ids = run_gptkit("tokenize", "encode", "--tokenizer", str(tok_dir), "--format", fmt, str(source)).stdout
    back = run_gptkit("tokenize", "decode", "--tokenizer", str(tok_dir), "--format", fmt, input=ids).stdout
    assert back == TRICKY


def test_formats_hold_the_expected_ids(tok_dir):
    tok = load_tokenizer(tok_dir)
    text = "First line\n\nthird, no newline"
    lines = run_gptkit("tokenize", "encode", "-t", str(tok_dir), input=text.encode()).stdout.decode()
    # one line of ids per input line, each including its newline
    assert lines.splitlines() == [" ".join(map(str, tok.encode(line))) for line in text.splitlines(keepends=True)]
    jsonl = run_gptkit("tokenize", "encode", "-t", str(tok_dir), "-f", "jsonl", input=text.encode()).stdout.decode()
    assert [json.loads(line) for line in jsonl.splitlines()] == [tok.encode(line) for line in text.splitlines(keepends=True)]
    raw = run_gptkit("tokenize", "encode", "-t", str(tok_dir), "-f", "bin", input=text.encode()).stdout
    assert np.frombuffer(raw, dtype="<u2").tolist() == tok.encode(text)  # the whole text at once


def test_shell_pipe_reproduces_shakespeare(tok_dir, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text(shakespeare()[:300_000] + TRICKY.decode(), encoding="utf-8")
    env = {"PYTHONPATH": str(ROOT), "NO_COLOR": "1", "PATH": "/usr/bin:/bin"}
    gptkit = f"{sys.executable} -m gptkit"
    command = f"cat {source} | {gptkit} tokenize encode -t {tok_dir} | {gptkit} tokenize decode -t {tok_dir} | cmp - {source}"
    result = subprocess.run(["bash", "-c", "set -o pipefail; " + command], capture_output=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()


def test_allow_special_turns_the_separator_into_its_id(tok_dir):
    tok = load_tokenizer(tok_dir)
    text = b"one<|endoftext|>two"
    plain = run_gptkit("tokenize", "encode", "-t", str(tok_dir), input=text).stdout.split()
    special = run_gptkit("tokenize", "encode", "-t", str(tok_dir), "--allow-special", input=text).stdout.split()
    assert str(tok.eot_id).encode() not in plain
    assert special.count(str(tok.eot_id).encode()) == 1
    assert run_gptkit("tokenize", "decode", "-t", str(tok_dir), input=b" ".join(special)).stdout == text


def test_tokenizer_from_a_data_folder_and_a_checkpoint(tmp_path):
    pytest.importorskip("torch")
    from gptkit.checkpoint import save_checkpoint
    from gptkit.model import GPT, ModelConfig
    from gptkit.prepare import prepare_text

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(training_corpus()[:60_000], encoding="utf-8")
    result = run_gptkit("prepare", "text", str(corpus), "--tokenizer", "bpe:300", "--out", str(tmp_path / "data"))
    assert result.stdout.decode().strip() == str(tmp_path / "data")
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["tokenizer"]["kind"] == "bpe" and meta["vocab_size"] == 300

    model = GPT(ModelConfig(vocab_size=300, block_size=8, n_layer=1, n_head=1, n_embd=8))
    save_checkpoint(tmp_path / "run" / "ckpt.safetensors", model, meta["tokenizer"], step=1)

    new_text = "New text for fine-tuning: ação 👍\n".encode()
    by_data = run_gptkit("tokenize", "encode", "-t", str(tmp_path / "data"), input=new_text).stdout
    by_ckpt = run_gptkit("tokenize", "encode", "-t", str(tmp_path / "run" / "ckpt.safetensors"), input=new_text).stdout
    by_run = run_gptkit("tokenize", "encode", "-t", str(tmp_path / "run"), input=new_text).stdout
    assert by_data == by_ckpt == by_run
    assert run_gptkit("tokenize", "decode", "-t", str(tmp_path / "run"), input=by_ckpt).stdout == new_text
    # and `prepare --tokenizer PATH` reuses it exactly
    again = prepare_text([corpus], tmp_path / "data2", str(tmp_path / "run" / "ckpt.safetensors"))
    assert again["tokenizer"] == meta["tokenizer"]


def test_inspect_shows_vocabulary_merges_compression_and_tokens(tok_dir):
    out = run_gptkit("tokenize", "inspect", "-t", str(tok_dir), "Hello there, ação!\nBye").stdout.decode()
    assert "bpe:400" in out and "vocabulary: 400 ids" in out
    assert "first learned (merges, in the order learned)" in out and "= ' ' + 't'" in out
    assert "longest tokens" in out
    assert "bytes/token" in out
    assert "|" in out and "↵" in out  # without colour, token boundaries are marked
    report = json.loads(run_gptkit("tokenize", "inspect", "-t", str(tok_dir), "--json", "Hello there").stdout)
    tok = load_tokenizer(tok_dir)
    assert report["vocab_size"] == 400 and report["text"]["tokens"] == len(tok.encode("Hello there"))
    assert [t["id"] for t in report["text"]["shown"]] == tok.encode("Hello there")
    assert report["learned"][0] == {"id": 256, "token": " t", "merge": [" ", "t"]}


def test_inspect_reads_a_file_or_stdin(tok_dir, tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("from a file\n")
    from_file = json.loads(run_gptkit("tokenize", "inspect", "-t", str(tok_dir), "--json", str(path)).stdout)
    from_stdin = json.loads(run_gptkit("tokenize", "inspect", "-t", str(tok_dir), "--json", input=b"from a file\n").stdout)
    assert from_file["text"] == from_stdin["text"] and from_file["text"]["bytes"] == 12


@pytest.mark.parametrize(
    "args, stdin, code, message",
    [
        (["encode", "-t", "bpe:4096"], b"x", 2, "names a tokenizer to train"),
        (["encode", "-t", "no/such/dir"], b"x", 2, "neither a pretrained encoding nor an existing path"),
        (["encode", "-f", "xml"], b"x", 2, "unknown format"),
        (["encode"], b"ok\n\xff\xfe bad\n", 1, "line 2 of the input is not valid UTF-8"),
        (["decode"], b"1 2 x\n", 1, "line 1 of the input is not space-separated ids"),
        (["decode"], b"1 2 99999\n", 1, "outside the bpe:400 vocabulary"),
        (["decode", "-f", "bin"], b"\x01\x00\x02", 1, "middle of a token id"),
    ],
)
def test_mistakes_are_one_line_errors(tok_dir, args, stdin, code, message):
    if "-t" not in args:
        args = args + ["-t", str(tok_dir)]
    result = run_gptkit("tokenize", *args, input=stdin, check=False)
    assert result.returncode == code
    assert message in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_pretrained_names_are_accepted_when_cached():
    from tokenizer_fixtures import pretrained

    pretrained("gpt2")  # skips offline
    assert run_gptkit("tokenize", "encode", "-t", "gpt2", input=b"Hello world").stdout.split() == [b"15496", b"995"]


def test_library_round_trip_in_memory(tok_dir):
    import io

    from gptkit.tokenization import decode_stream, encode_stream

    for fmt in ("lines", "jsonl", "bin", "npy"):
        ids = io.BytesIO()
        stats = encode_stream(tok_dir, io.BytesIO(TRICKY), ids, fmt)
        back = io.BytesIO()
        decode_stream(tok_dir, io.BytesIO(ids.getvalue()), back, fmt)
        assert back.getvalue() == TRICKY and stats["bytes"] == len(TRICKY) and stats["tokens"] > 0


def test_inspect_colours_tokens_in_a_terminal(tok_dir, monkeypatch):
    import io
    import re

    from rich.console import Console

    from gptkit.cli.tokenize import _render_inspect
    from gptkit.tokenization import inspect_tokenizer

    monkeypatch.delenv("NO_COLOR", raising=False)  # conftest turns colour off for every test; this one is about colour
    buffer = io.StringIO()
    _render_inspect(inspect_tokenizer(tok_dir, "Hello there, friends"), Console(file=buffer, force_terminal=True, color_system="standard"))
    split = buffer.getvalue().splitlines()[-1]
    styles = re.findall(r"\x1b\[([\d;]+)m", split)
    assert len({s for s in styles if s != "0"}) >= 3  # neighbouring tokens get different colours
    assert "|" not in split  # colour, not separators, marks the boundaries
