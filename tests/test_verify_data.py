"""Damaged shards are named: `verify_data_folder` (gptkit prepare verify) and the per-shard checksums."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gptkit.errors import GptkitError
from gptkit.prepare import prepare_text
from gptkit.shards import HEADER_BYTES, read_meta, verify_data_folder


@pytest.fixture
def data(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 400, encoding="utf-8")
    out = tmp_path / "data"
    prepare_text([text], out, "char", 0.1)
    return out


def _damage(path, every=500, value=65535):
    tokens = np.memmap(path, dtype="<u2", mode="r+", offset=HEADER_BYTES)
    tokens[::every] = value
    tokens.flush()


def test_prepare_records_a_checksum_per_shard_and_an_intact_folder_verifies(data):
    meta = read_meta(data)
    for info in meta["splits"].values():
        assert set(info["checksums"]) == set(info["shards"]) and all(len(c) == 64 for c in info["checksums"].values())
    report = verify_data_folder(data)
    assert report["checksums_verified"] == 2 and report["tokens"] == sum(i["tokens"] for i in meta["splits"].values())


def test_out_of_vocabulary_ids_name_the_shard_position_and_value(data):
    _damage(data / "train_000000.bin")
    _damage(data / "val_000000.bin")
    with pytest.raises(GptkitError) as e:
        verify_data_folder(data)
    assert "2 damaged shard(s)" in e.value.message
    assert "train_000000.bin is damaged: token 0 of the shard is 65535, outside the vocabulary" in e.value.message
    assert "val_000000.bin is damaged" in e.value.message


def test_a_changed_token_inside_the_vocabulary_fails_the_checksum(data):
    _damage(data / "val_000000.bin", every=1000, value=3)
    with pytest.raises(GptkitError, match=r"val_000000.bin is damaged: its tokens do not match the checksum"):
        verify_data_folder(data)


def test_folders_without_checksums_still_verify(data):
    meta = json.loads((data / "meta.json").read_text())
    for info in meta["splits"].values():
        del info["checksums"]
    (data / "meta.json").write_text(json.dumps(meta))
    assert verify_data_folder(data)["checksums_verified"] == 0
    _damage(data / "train_000000.bin")
    with pytest.raises(GptkitError, match="outside the vocabulary"):
        verify_data_folder(data)


def test_train_and_eval_name_the_damaged_shard(data, tmp_path, run_cli):
    """Every 500th token overwritten with 65535 (outside the char vocabulary), after prepare."""
    for name in ("train_000000.bin", "val_000000.bin"):
        _damage(data / name)
    model = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "2"]
    result = run_cli("train", "--data", data, "--out", tmp_path / "run", "--max-iters", "3", "--device", "cpu", *model)
    assert result.code == 1 and "unexpected" not in result.stderr, result.stderr
    assert "train_000000.bin is damaged: token" in result.stderr and "is 65535, outside the vocabulary" in result.stderr
    assert "gptkit prepare verify" in result.stderr
    assert not (tmp_path / "run" / "ckpt.safetensors").exists()  # nothing saved from such a step

    clean = tmp_path / "clean"
    prepare_text([tmp_path / "t.txt"], clean, "char", 0.1)
    assert run_cli("train", "--data", clean, "--out", tmp_path / "ok", "--max-iters", "2", "--eval-iters", "1", "--device", "cpu", *model).code == 0
    result = run_cli("eval", "--ckpt", tmp_path / "ok" / "ckpt.safetensors", "--data", data, "--device", "cpu")
    assert result.code == 1 and "val_000000.bin is damaged: token" in result.stderr, result.stderr


def test_prepare_verify_command(data, run_cli):
    ok = run_cli("prepare", "verify", data, "--json")
    assert ok.code == 0 and json.loads(ok.stdout)["checksums_verified"] == 2
    _damage(data / "val_000000.bin")
    bad = run_cli("prepare", "verify", data)
    assert bad.code == 1 and "val_000000.bin is damaged" in bad.stderr and "train_000000" not in bad.stderr
