import json
import struct

import numpy as np
import pytest
import torch

from gptkit.errors import GptkitError
from gptkit.loader import RandomBatches
from gptkit.shards import (
    HEADER_BYTES,
    MAGIC_UINT16,
    MAGIC_UINT32,
    Split,
    read_meta,
    read_shard,
    token_dtype_for,
    write_meta,
    write_shard,
)


def test_token_dtype_for():
    assert token_dtype_for(66) == np.uint16
    assert token_dtype_for(50257) == np.uint16
    assert token_dtype_for(65536) == np.uint16  # ids 0..65535 fit
    assert token_dtype_for(65537) == np.uint32
    assert token_dtype_for(200_019) == np.uint32


@pytest.mark.parametrize("dtype, magic", [(np.uint16, MAGIC_UINT16), (np.uint32, MAGIC_UINT32)])
def test_write_read_round_trip(tmp_path, dtype, magic):
    top = np.iinfo(dtype).max
    tokens = np.array([0, 1, 2, 50256, top - 1, top], dtype=dtype)
    path = tmp_path / "train_000000.bin"
    write_shard(path, tokens)
    back = read_shard(path)
    assert back.dtype == dtype and np.array_equal(back, tokens)
    assert path.stat().st_size == HEADER_BYTES + tokens.nbytes
    raw = path.read_bytes()
    assert struct.unpack("<3i", raw[:12]) == (magic, 1, len(tokens))
    assert np.array_equal(np.frombuffer(raw[HEADER_BYTES:], dtype=np.dtype(dtype).newbyteorder("<")), tokens)


def test_header_is_llm_c_layout(tmp_path):
    """Exactly llm.c's: 256 little-endian int32 (magic 20240520, version 1, count, zeros), then uint16."""
    path = tmp_path / "s.bin"
    write_shard(path, np.arange(1000, dtype=np.uint16))
    raw = path.read_bytes()
    assert len(raw) == 1024 + 2 * 1000
    header = struct.unpack("<256i", raw[:1024])
    assert header[:3] == (20240520, 1, 1000)
    assert all(v == 0 for v in header[3:])
    assert struct.unpack("<3H", raw[1024:1030]) == (0, 1, 2)
    assert struct.unpack("<H", raw[-2:]) == (999,)


def test_reads_a_shard_written_the_llm_c_way(tmp_path):
    """A shard built byte by byte as llm.c / modded-nanogpt write them is read unchanged."""
    tokens = [50256, 464, 3290, 318, 0, 65535]
    header = [20240520, 1, len(tokens)] + [0] * 253
    path = tmp_path / "fineweb_val_000000.bin"
    path.write_bytes(struct.pack("<256i", *header) + struct.pack(f"<{len(tokens)}H", *tokens))
    assert read_shard(path).tolist() == tokens


def test_empty_shard_round_trip(tmp_path):
    write_shard(tmp_path / "e.bin", np.zeros(0, dtype=np.uint16))
    assert len(read_shard(tmp_path / "e.bin")) == 0


def test_write_rejects_other_dtypes(tmp_path):
    with pytest.raises(ValueError, match="uint16 or uint32"):
        write_shard(tmp_path / "x.bin", np.arange(3, dtype=np.int64))
    assert not (tmp_path / "x.bin").exists()


def _shard_with_header(tmp_path, magic=MAGIC_UINT16, version=1, count=4, num_tokens=4, name="bad.bin"):
    header = [magic, version, count] + [0] * 253
    path = tmp_path / name
    path.write_bytes(struct.pack("<256i", *header) + b"\x01\x00" * num_tokens)
    return path


def test_bad_magic(tmp_path):
    path = _shard_with_header(tmp_path, magic=12345)
    with pytest.raises(GptkitError, match="not a token shard \\(magic number 12345, expected 20240520 or 20241126\\)"):
        read_shard(path)


def test_wrong_version(tmp_path):
    path = _shard_with_header(tmp_path, version=2)
    with pytest.raises(GptkitError, match="shard format version 2; this gptkit reads version 1") as info:
        read_shard(path)
    assert "upgrade gptkit" in info.value.hint


def test_truncated_file(tmp_path):
    path = tmp_path / "t.bin"
    write_shard(path, np.arange(100, dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:-10])  # lose 5 tokens
    with pytest.raises(GptkitError, match="damaged: its header promises 100 tokens \\(1,224 bytes\\) but the file has 1,214 bytes"):
        read_shard(path)


def test_file_longer_than_header_promises(tmp_path):
    path = _shard_with_header(tmp_path, count=4, num_tokens=6)
    with pytest.raises(GptkitError, match="damaged"):
        read_shard(path)


def test_too_short_file(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(GptkitError, match="only 100 bytes, shorter than its 1024-byte header"):
        read_shard(path)


def test_missing_file(tmp_path):
    with pytest.raises(GptkitError, match="does not exist") as info:
        read_shard(tmp_path / "nope.bin")
    assert "gptkit prepare" in info.value.hint


# --- meta.json --------------------------------------------------------------------------------------


def _meta(tmp_path, vocab_size=3, **splits):
    return write_meta(
        tmp_path,
        {"kind": "char", "chars": "ab"},
        vocab_size=vocab_size,
        eot_id=2,
        splits=splits or {"train": {"tokens": 0, "bytes": 0, "shards": []}},
        source={"name": "test"},
    )


def test_meta_round_trip(tmp_path):
    meta = _meta(tmp_path)
    assert read_meta(tmp_path) == meta
    assert meta["format"] == "gptkit.data" and meta["format_version"] == 1
    assert meta["token_dtype"] == "uint16" and meta["eot_id"] == 2
    import gptkit

    assert meta["gptkit_version"] == gptkit.__version__


def test_meta_missing_folder_and_file(tmp_path):
    with pytest.raises(GptkitError, match="data folder .* does not exist") as info:
        read_meta(tmp_path / "nope")
    assert "gptkit prepare shakespeare --out" in info.value.hint
    with pytest.raises(GptkitError, match="not a gptkit data folder: it has no meta.json"):
        read_meta(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON"),
        (b"\xff\xfe\x00", "is not valid JSON"),
        ('["a list"]', "is not a gptkit meta.json"),
        ('{"format": "something.else", "format_version": 1}', "is not a gptkit meta.json"),
        ('{"format": "gptkit.data", "format_version": 2}', "has format version 2, newer than this gptkit reads"),
        ('{"format": "gptkit.data", "format_version": "1"}', "invalid format_version"),  # a string, not an int
        ('{"format": "gptkit.data", "format_version": 1, "vocab_size": 3, "splits": {}}', "lacks the field 'tokenizer'"),
    ],
)
def test_meta_bad_content(tmp_path, content, message):
    path = tmp_path / "meta.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(GptkitError, match=message):
        read_meta(tmp_path)


def test_newer_meta_hint_says_upgrade(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"format": "gptkit.data", "format_version": 99}))
    with pytest.raises(GptkitError) as info:
        read_meta(tmp_path)
    assert info.value.hint == "upgrade gptkit"


# --- Split --------------------------------------------------------------------------------------------


@pytest.fixture
def three_shard_split(tmp_path):
    """A 'train' split of three shards whose tokens are their own positions in the stream (0..n-1)."""
    sizes = [50, 30, 40]
    names, start = [], 0
    for i, size in enumerate(sizes):
        name = f"train_{i:06d}.bin"
        write_shard(tmp_path / name, np.arange(start, start + size, dtype=np.uint16))
        names.append(name)
        start += size
    # a vocabulary that holds every position-token (readers stop at ids outside it: check_ids)
    _meta(tmp_path, start, train={"tokens": start, "bytes": start, "shards": names}, val={"tokens": 0, "bytes": 0, "shards": []})
    return Split.open(tmp_path, "train")


def test_split_open(three_shard_split, tmp_path):
    assert three_shard_split.num_tokens == 120 and len(three_shard_split.shards) == 3
    with pytest.raises(GptkitError, match="has no 'test' split") as info:
        Split.open(tmp_path, "test")
    assert "train, val" in info.value.hint


def random_batch(split: Split, batch_size: int, block_size: int, seed: int) -> tuple:
    """One batch of the `random` sampler (gptkit.loader.RandomBatches) over `split`, seeded afresh."""
    return RandomBatches(split, batch_size=batch_size, block_size=block_size, seed=seed).next_batch()


def test_random_windows_targets_are_inputs_shifted_by_one(three_shard_split):
    x, y = random_batch(three_shard_split, 64, 8, seed=0)
    assert x.shape == y.shape == (64, 8) and x.dtype == y.dtype == torch.int64
    # Tokens are positions, and a window never crosses a shard boundary: each row counts up by one.
    assert torch.equal(y, x + 1)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x - x[:, :1], torch.arange(8).expand(64, 8))


def test_random_windows_are_reproducible(three_shard_split):
    a = random_batch(three_shard_split, 16, 8, seed=42)
    b = random_batch(three_shard_split, 16, 8, seed=42)
    c = random_batch(three_shard_split, 16, 8, seed=43)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_random_windows_span_every_shard_and_every_start(three_shard_split):
    block = 8
    x, _ = random_batch(three_shard_split, 4000, block, seed=1)
    starts = set(x[:, 0].tolist())
    # Valid starts: shard k's offsets 0 .. len-block-1, in stream positions.
    expected = set(range(0, 42)) | set(range(50, 72)) | set(range(80, 112))
    assert starts == expected


def test_iter_windows_covers_the_split_in_order(three_shard_split):
    block = 8
    batches = list(three_shard_split.iter_windows(block, batch_size=4))
    xs = torch.cat([x for x, _ in batches])
    ys = torch.cat([y for _, y in batches])
    assert [len(x) for x, _ in batches] == [4, 4, 4, 1]  # 6 + 3 + 4 = 13 windows
    assert torch.equal(ys, xs + 1)
    # Consecutive, non-overlapping windows per shard; each shard's tail that cannot fill a window is skipped.
    assert xs[:, 0].tolist() == [0, 8, 16, 24, 32, 40, 50, 58, 66, 80, 88, 96, 104]
    covered = set(xs.flatten().tolist()) | set(ys.flatten().tolist())
    assert covered == set(range(0, 49)) | set(range(50, 75)) | set(range(80, 113))


def test_iter_windows_max_batches(three_shard_split):
    batches = list(three_shard_split.iter_windows(8, batch_size=2, max_batches=3))
    assert len(batches) == 3 and all(len(x) == 2 for x, _ in batches)


def test_check_fits(three_shard_split):
    three_shard_split.check_fits(49)
    with pytest.raises(GptkitError, match="no shard longer than the context \\(50 tokens\\); its longest has 50") as info:
        three_shard_split.check_fits(50)
    assert "--block-size" in info.value.hint


# --- properties ------------------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([np.uint16, np.uint32]).flatmap(
    lambda dt: st.lists(st.integers(0, int(np.iinfo(dt).max)), max_size=300).map(lambda xs: np.array(xs, dtype=dt))
))
def test_round_trip_property(tokens):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.bin"
        write_shard(path, tokens)
        back = read_shard(path)
        assert back.dtype == tokens.dtype and np.array_equal(back, tokens)
        del back  # release the memory map before the folder goes
