"""`prepare` with every tokenizer: streaming prepare_text gives exactly what in-memory preparing gives,
the tokenizer travels into meta.json, and `train --resume` refuses data tokenized differently."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizer_fixtures import TRICKY_TEXTS, run_gptkit, shakespeare, small_bpe

import gptkit.prepare as prepare
from gptkit.errors import GptkitError
from gptkit.prepare import Document, prepare_documents, prepare_text
from gptkit.shards import Split, read_meta
from gptkit.tokenizers import load_tokenizer


def tokens(data_dir, split):
    return np.concatenate([np.asarray(s) for s in Split.open(data_dir, split).shards]).tolist()


@pytest.fixture
def files(tmp_path):
    texts = [shakespeare()[:60_000], TRICKY_TEXTS["mixed"], "", shakespeare()[60_000:90_000] + TRICKY_TEXTS["whitespace"]]
    folder = tmp_path / "src"
    folder.mkdir()
    for i, text in enumerate(texts):
        (folder / f"{i}.txt").write_text(text, encoding="utf-8")
    return folder, texts


@pytest.mark.parametrize("tokenizer", ["char", "char:unk", "bpe:300", "sp-bpe:400", "sp-unigram:400"])
def test_streaming_equals_in_memory(files, tmp_path, tokenizer, monkeypatch):
    folder, texts = files
    monkeypatch.setattr("gptkit.tokenizers.streaming.PIECE_CHARS", 1000)  # cut into many pieces
    monkeypatch.setattr("gptkit.sources.BLOCK_BYTES", 777)
    pieces = []
    real_iter_pieces = prepare.iter_pieces
    monkeypatch.setattr(prepare, "iter_pieces", lambda blocks: (pieces.append(p) or p for p in real_iter_pieces(blocks)))
    streamed = prepare_text([folder], tmp_path / "a", tokenizer, 0.15, shard_tokens=5000, workers=2)
    assert len(pieces) > 80 and max(map(len, pieces)) < 2000
    in_memory = prepare_documents([Document(str(i), t) for i, t in enumerate(texts)], tmp_path / "b", tokenizer, 0.15, shard_tokens=5000)
    assert streamed["tokenizer"] == in_memory["tokenizer"]
    assert streamed["splits"] == in_memory["splits"]
    assert len(streamed["splits"]["train"]["shards"]) > 1  # several shards, filled in as tokens come
    for split in ("train", "val"):
        assert tokens(tmp_path / "a", split) == tokens(tmp_path / "b", split)
    tok = load_tokenizer(tmp_path / "a")
    assert tok.spec() == streamed["tokenizer"]
    # the documents are joined with <|endoftext|>: decoding the train split gives them back
    train_text = tok.decode(tokens(tmp_path / "a", "train"))
    assert train_text.startswith(texts[0][:1000]) and train_text.count("<|endoftext|>") == 2


def test_source_files_are_hashed_as_before(files, tmp_path):
    import hashlib

    folder, _ = files
    meta = prepare_text([folder], tmp_path / "out", "char")
    entries = meta["source"]["files"]
    assert [e["path"] for e in entries] == [str(p) for p in sorted(folder.iterdir())]
    assert all(e["sha256"] == hashlib.sha256(open(e["path"], "rb").read()).hexdigest() for e in entries)


def test_learned_tokenizers_train_on_the_training_split_only(tmp_path):
    train_part = "alpha beta gamma\n" * 500
    val_part = "zzzqqq xxxyyy\n" * 100
    (tmp_path / "t.txt").write_text(train_part + val_part)
    meta = prepare_text([tmp_path / "t.txt"], tmp_path / "out", "bpe:280", val_fraction=len(val_part) / len(train_part + val_part))
    tok = load_tokenizer(tmp_path / "out")
    assert len(tok.encode("alpha")) == 1  # learned
    assert len(tok.encode("zzzqqq")) > 2  # never seen: validation text stays out of training
    assert meta["splits"]["val"]["bytes"] == len(val_part)


def test_training_text_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "TOKENIZER_TRAIN_CHARS", 1000)
    (tmp_path / "t.txt").write_text("ab " * 400 + "cd " * 5000)
    prepare_text([tmp_path / "t.txt"], tmp_path / "out", "bpe:300", val_fraction=0.0)
    tok = load_tokenizer(tmp_path / "out")
    assert len(tok.encode(" ab")) == 1 and len(tok.encode(" cd")) == 3  # " cd" starts after the cap


def test_invalid_utf8_is_reported_before_any_work(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"fine\n" * 10 + b"\xff oops")
    with pytest.raises(GptkitError, match="not valid UTF-8 \\(byte 50: b'\\\\xff oo'\\)"):
        prepare_text([tmp_path / "bad.txt"], tmp_path / "out", "bpe:300")
    assert not (tmp_path / "out").exists()


def test_prepare_cli_accepts_every_tokenizer_kind(tmp_path):
    source = tmp_path / "s.txt"
    source.write_text(shakespeare()[:80_000])
    for name, kind in [("sp-unigram:500", "sentencepiece"), ("bpe:300", "bpe"), ("char:unk", "char")]:
        out = tmp_path / name.replace(":", "-")
        run_gptkit("prepare", "shakespeare", "--source", str(source), "--tokenizer", name, "--out", str(out))
        meta = read_meta(out)
        assert meta["tokenizer"]["kind"] == kind and load_tokenizer(out).spec() == meta["tokenizer"]
    # a saved tokenizer folder as PATH
    small_bpe().save(tmp_path / "tok")
    run_gptkit("prepare", "text", str(source), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "p"))
    assert read_meta(tmp_path / "p")["tokenizer"] == small_bpe().spec()
    result = run_gptkit("prepare", "text", str(source), "--tokenizer", "bpe:x", "--out", str(tmp_path / "q"), check=False)
    assert result.returncode == 2 and "positive number" in result.stderr.decode()


def test_resume_refuses_data_with_another_tokenizer(tmp_path):
    pytest.importorskip("torch")
    from gptkit.config import resolve_config
    from gptkit.train import train

    source = tmp_path / "s.txt"
    source.write_text(shakespeare()[:40_000])
    prepare_text([source], tmp_path / "data", "bpe:300")
    model_config, train_config = resolve_config(
        None,
        model_overrides=dict(n_layer=1, n_head=1, n_embd=16, block_size=16),
        train_overrides=dict(data=str(tmp_path / "data"), out=str(tmp_path / "run"), max_iters=2, eval_interval=2,
                             eval_iters=1, batch_size=2, device="cpu", warmup_iters=0),
    )
    train(model_config, train_config)
    prepare_text([source], tmp_path / "data", "bpe:301")  # same text, another tokenizer
    with pytest.raises(GptkitError, match="tokenized differently"):
        train(model_config, train_config.__class__(**{**train_config.__dict__, "max_iters": 4}), resume=True)
    prepare_text([source], tmp_path / "data", str(tmp_path / "run"))  # the run's own tokenizer again
    result = train(model_config, train_config.__class__(**{**train_config.__dict__, "max_iters": 4}), resume=True)
    assert result.step == 4
    assert json.loads((tmp_path / "data" / "meta.json").read_text())["tokenizer"]["merges"]


def test_text_blocks_complete_characters_split_between_blocks():
    import io

    from gptkit.sources import read_text_blocks

    text = "héllo 😀 日本語 " * 50
    blocks = list(read_text_blocks(io.BytesIO(text.encode()), "t", block_bytes=7))
    assert "".join(blocks) == text and len(blocks) > 50
    data = "😀".encode() * 3 + b"\xff"  # the bad byte comes after characters split across blocks
    with pytest.raises(GptkitError, match="byte 12"):
        list(read_text_blocks(io.BytesIO(data), "t", block_bytes=5))
