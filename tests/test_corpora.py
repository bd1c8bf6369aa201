"""Corpora beyond plain text: JSONL and Parquet rows as documents, and `prepare hf` streaming a dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gptkit.errors import GptkitError
from gptkit.hf_datasets import prepare_hf
from gptkit.prepare import prepare_text
from gptkit.shards import Split, read_meta
from gptkit.tokenizers import CharTokenizer

DOCS = ["first document\n", "the second one", "third: ação 🙂", "fourth and last"]


@pytest.fixture
def tok():
    return CharTokenizer("".join(sorted(set("".join(DOCS)))))


def joined_ids(tok, docs):
    ids = []
    for i, d in enumerate(docs):
        ids += ([tok.eot_id] if i else []) + tok.encode(d)
    return ids


def train_ids(data):
    return np.concatenate([np.asarray(s) for s in Split.open(data, "train").shards]).tolist()


def test_jsonl_rows_are_documents(tmp_path, tok):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(DOCS)) + "\n", encoding="utf-8")
    meta = prepare_text([path], tmp_path / "data", tok, val_fraction=0.0, workers=1, text_field="body")
    assert train_ids(tmp_path / "data") == joined_ids(tok, DOCS)
    assert meta["source"]["files"][0]["bytes"] == path.stat().st_size


def test_a_bad_jsonl_line_names_the_line(tmp_path, tok):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n{"txt": "b"}\n', encoding="utf-8")
    with pytest.raises(GptkitError, match=r"c.jsonl, line 2: no string field 'text' \(found: txt\)"):
        prepare_text([path], tmp_path / "data", tok, workers=1)


def test_parquet_rows_are_documents_and_stream_in_batches(tmp_path, tok, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    import gptkit.records

    monkeypatch.setattr(gptkit.records, "BATCH_ROWS", 2)  # several record batches, as with a big file
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": DOCS * 3, "score": list(range(12))}), path, row_group_size=5)
    prepare_text([path], tmp_path / "data", tok, val_fraction=0.0, workers=1)
    assert train_ids(tmp_path / "data") == joined_ids(tok, DOCS * 3)
    with pytest.raises(GptkitError, match=r"has no column 'body' \(it has: text, score\)"):
        prepare_text([path], tmp_path / "data2", tok, workers=1, text_field="body")


def test_prepare_text_cli_reads_jsonl(tmp_path, run_cli, tok):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS), encoding="utf-8")
    result = run_cli("prepare", "text", path, "--out", tmp_path / "data", "--val-fraction", "0")
    assert result.code == 0, result.output
    assert read_meta(tmp_path / "data")["splits"]["train"]["tokens"] == len(joined_ids(CharTokenizer.train("".join(DOCS)), DOCS))


def test_prepare_hf_streams_rows_and_spreads_validation(tmp_path, tok):
    rows = [{"text": d} for d in DOCS * 2]  # 8 documents; val_fraction 0.25: numbers 3 and 7 validate
    meta = prepare_hf("local", tmp_path / "data", tok, documents=rows, val_fraction=0.25, workers=1)
    train_docs = [d for i, d in enumerate(DOCS * 2) if i % 4 != 3]
    assert train_ids(tmp_path / "data") == joined_ids(tok, train_docs)
    val = np.asarray(Split.open(tmp_path / "data", "val").shards[0]).tolist()
    assert val == joined_ids(tok, [DOCS[3], DOCS[3]])
    assert meta["source"]["val_every"] == 4
    limited = prepare_hf("local", tmp_path / "d2", tok, documents=rows, val_fraction=0.0, max_documents=2, workers=1)
    assert limited["splits"]["train"]["tokens"] == len(joined_ids(tok, DOCS[:2]))
    with pytest.raises(GptkitError, match="row 0 of the dataset has no string field 'body'"):
        prepare_hf("local", tmp_path / "d3", tok, documents=rows, text_field="body", workers=1)


def test_prepare_hf_trains_a_tokenizer_on_the_stream(tmp_path):
    rows = [{"text": d} for d in DOCS]
    meta = prepare_hf("local", tmp_path / "data", "char", documents=lambda: iter(rows), val_fraction=0.0, workers=1)
    assert meta["tokenizer"]["kind"] == "char"


def test_prepare_hf_through_datasets_on_local_files(tmp_path, tok, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"content": d}) + "\n" for d in DOCS), encoding="utf-8")
    prepare_hf("json", tmp_path / "data", tok, data_files=[str(path)], text_field="content", val_fraction=0.0, workers=1)
    assert train_ids(tmp_path / "data") == joined_ids(tok, DOCS)
