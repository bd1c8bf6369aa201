import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import SHAKESPEARE_SHA256
from gptkit.errors import GptkitError, UsageError
from gptkit.prepare import Document, prepare_documents, prepare_shakespeare, prepare_text, split_documents, train_val_cut
from gptkit.shards import Split, read_meta, read_shard
from gptkit.tokenizers import ENDOFTEXT, tokenizer_from_spec


def split_text(data_dir: Path, split: str) -> str:
    meta = read_meta(data_dir)
    tokens = np.concatenate([np.asarray(s) for s in Split.open(data_dir, split, meta).shards])
    return tokenizer_from_spec(meta["tokenizer"]).decode(tokens.tolist())


# --- tiny Shakespeare -------------------------------------------------------------------------------


def test_prepare_shakespeare_from_source(shakespeare_data, shakespeare_file):
    meta = read_meta(shakespeare_data)
    assert meta["vocab_size"] == 66 and meta["eot_id"] == 65
    assert meta["token_dtype"] == "uint16"
    assert meta["splits"]["train"]["tokens"] == 1_003_854
    assert meta["splits"]["val"]["tokens"] == 111_540
    assert meta["splits"]["train"]["bytes"] == 1_003_854  # ASCII: one byte per character
    assert meta["splits"]["train"]["shards"] == ["train_000000.bin"]
    assert meta["source"]["name"] == "shakespeare"
    assert meta["source"]["sha256"] == SHAKESPEARE_SHA256
    assert meta["source"]["files"] == [{"path": str(shakespeare_file), "bytes": 1_115_394, "sha256": SHAKESPEARE_SHA256}]
    assert meta["tokenizer"]["kind"] == "char" and len(meta["tokenizer"]["chars"]) == 65
    assert json.loads((shakespeare_data / "tokenizer.json").read_text()) == meta["tokenizer"]
    assert sorted(p.name for p in shakespeare_data.iterdir()) == ["meta.json", "tokenizer.json", "train_000000.bin", "val_000000.bin"]
    # The split is nanoGPT's: the first 90% of the characters, then the rest; nothing lost or added.
    text = shakespeare_file.read_text(encoding="utf-8")
    assert split_text(shakespeare_data, "train") == text[:1_003_854]
    assert split_text(shakespeare_data, "val") == text[1_003_854:]


def test_prepare_shakespeare_uses_env_var(tmp_path, monkeypatch, shakespeare_file):
    monkeypatch.setenv("GPTKIT_SHAKESPEARE", str(shakespeare_file))
    logs = []
    meta = prepare_shakespeare(tmp_path / "d", val_fraction=0.5, log=logs.append)  # urlopen would fail the test
    assert meta["source"]["files"][0]["path"] == str(shakespeare_file)
    assert meta["splits"]["train"]["tokens"] == 1_115_394 // 2
    assert any(str(shakespeare_file) in line for line in logs)


def test_prepare_shakespeare_other_file_warns(tmp_path, small_corpus):
    source = tmp_path / "other.txt"
    source.write_text(small_corpus)
    logs = []
    meta = prepare_shakespeare(tmp_path / "d", source=source, log=logs.append)
    assert meta["source"]["sha256"] == hashlib.sha256(small_corpus.encode()).hexdigest()
    assert any(line.startswith("warning:") and "differs from the standard tiny Shakespeare" in line for line in logs)


class FakeResponse:
    def __init__(self, data: bytes):
        self.data = data

    def read(self):
        return self.data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_writes_cache_and_verifies(tmp_path, monkeypatch, shakespeare_file):
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return FakeResponse(shakespeare_file.read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    meta = prepare_shakespeare(tmp_path / "d")
    assert calls == ["https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"]
    cached = Path(os.environ["GPTKIT_CACHE"]) / "datasets" / "shakespeare.txt"
    assert cached.read_bytes() == shakespeare_file.read_bytes()
    assert meta["source"]["sha256"] == SHAKESPEARE_SHA256
    assert meta["splits"]["val"]["tokens"] == 111_540

    # A second prepare finds the verified cache and does not download again.
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded twice"))
    prepare_shakespeare(tmp_path / "d2")


def test_download_with_wrong_bytes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: FakeResponse(b"not shakespeare"))
    with pytest.raises(GptkitError, match="expected 86c4e6aa9db7c042") as info:
        prepare_shakespeare(tmp_path / "d")
    assert "15 bytes, expected 1,115,394" in info.value.message
    assert "--source" in info.value.hint
    assert not (Path(os.environ["GPTKIT_CACHE"]) / "datasets" / "shakespeare.txt").exists()
    assert not (tmp_path / "d").exists()


def test_corrupt_cache_is_downloaded_again(tmp_path, monkeypatch, shakespeare_file):
    cached = Path(os.environ["GPTKIT_CACHE"]) / "datasets" / "shakespeare.txt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a download")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: FakeResponse(shakespeare_file.read_bytes()))
    prepare_shakespeare(tmp_path / "d")
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == SHAKESPEARE_SHA256


def test_offline_error_suggests_source(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(GptkitError, match="could not download shakespeare from https://.*name resolution") as info:
        prepare_shakespeare(tmp_path / "d")
    assert "--source FILE" in info.value.hint and "GPTKIT_SHAKESPEARE" in info.value.hint


def test_timeout_is_an_offline_error(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: (_ for _ in ()).throw(TimeoutError("timed out")))
    with pytest.raises(GptkitError, match="could not download"):
        prepare_shakespeare(tmp_path / "d")


# --- the user's own text ----------------------------------------------------------------------------


@pytest.fixture
def text_tree(tmp_path):
    root = tmp_path / "in"
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "docs" / ".git").mkdir()
    (root / "docs" / "a.txt").write_text("alpha alpha alpha\n")
    (root / "docs" / "sub" / "b.txt").write_text("bravo bravo\n")
    (root / "docs" / ".hidden.txt").write_text("HIDDEN\n")
    (root / "docs" / ".git" / "config").write_text("GITCONFIG\n")
    (root / "c.txt").write_text("charlie!\n")
    return root


def test_prepare_text_joins_documents_with_eot(tmp_path, text_tree):
    out = tmp_path / "data"
    meta = prepare_text([text_tree / "c.txt", text_tree / "docs"], out, val_fraction=0.0)
    expected = "charlie!\n" + ENDOFTEXT + "alpha alpha alpha\n" + ENDOFTEXT + "bravo bravo\n"
    assert split_text(out, "train") == expected
    assert meta["splits"]["train"]["tokens"] == len(expected) - 2 * len(ENDOFTEXT) + 2
    assert meta["splits"]["val"]["tokens"] == 0
    # hidden files and folders are skipped: their characters are not even in the vocabulary
    assert "H" not in meta["tokenizer"]["chars"] and "G" not in meta["tokenizer"]["chars"]
    assert [Path(f["path"]).name for f in meta["source"]["files"]] == ["c.txt", "a.txt", "b.txt"]
    # the eot id appears exactly between documents
    train = np.asarray(read_shard(out / "train_000000.bin"))
    assert int((train == meta["eot_id"]).sum()) == 2


def test_prepare_text_split_cuts_at_the_character_fraction(tmp_path, text_tree):
    out = tmp_path / "data"
    meta = prepare_text([text_tree / "docs"], out, val_fraction=0.25)
    full = "alpha alpha alpha\n" + "bravo bravo\n"  # 30 characters; the cut at 22 falls inside b.txt
    assert split_text(out, "train") == "alpha alpha alpha\n" + ENDOFTEXT + "brav"
    assert split_text(out, "val") == "o bravo\n"
    assert meta["splits"]["train"]["bytes"] + meta["splits"]["val"]["bytes"] == len(full)


def test_split_documents_boundaries():
    docs = [Document("a", "aaaa"), Document("b", "bbbbbb")]
    assert split_documents(docs, 0.6) == {"train": ["aaaa"], "val": ["bbbbbb"]}
    assert split_documents(docs, 0.5) == {"train": ["aaaa", "b"], "val": ["bbbbb"]}
    assert split_documents(docs, 0.0) == {"train": ["aaaa", "bbbbbb"], "val": []}


@pytest.mark.parametrize("fraction", [0.1, 0.37, 0.5])
def test_the_in_memory_and_streaming_paths_cut_at_the_same_character(tmp_path, fraction):
    """prepare_documents and prepare_text share train_val_cut: the same three files give the same
    split texts whichever path reads them (the streaming one in blocks, a file straddling the cut)."""
    texts = ["alpha beta\n" * 7, "gamma\n" * 11, "delta epsilon\n" * 5]
    for i, text in enumerate(texts):
        (tmp_path / f"{i}.txt").write_text(text, encoding="utf-8")
    in_memory = split_documents([Document(str(i), t) for i, t in enumerate(texts)], fraction)
    prepare_text([tmp_path / f"{i}.txt" for i in range(3)], tmp_path / "data", "char", fraction, workers=1)
    cut = train_val_cut(sum(map(len, texts)), fraction)
    assert "".join(in_memory["train"]) == "".join(texts)[:cut]
    for split in ("train", "val"):
        streamed = split_text(tmp_path / "data", split).replace("<|endoftext|>", "")  # between files
        assert streamed == "".join(in_memory[split])


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_val_fraction_out_of_range(tmp_path, text_tree, fraction):
    with pytest.raises(UsageError, match=r"--val-fraction must be in \[0, 1\)"):
        prepare_text([text_tree / "c.txt"], tmp_path / "data", val_fraction=fraction)
    assert not (tmp_path / "data").exists()


def test_non_utf8_file_is_rejected(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    with pytest.raises(GptkitError, match=r"latin1.txt is not valid UTF-8 \(byte 3: b'\\xe9'\)") as info:
        prepare_text([bad], tmp_path / "data")
    assert "iconv" in info.value.hint


def test_binary_file_is_rejected(tmp_path):
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x7fELF\x00\x01\x02")
    with pytest.raises(GptkitError, match="model.bin looks like a binary file"):
        prepare_text([tmp_path], tmp_path / "data")


@pytest.mark.parametrize(
    "kind, message",
    [("missing", "missing.txt does not exist"), ("empty folder", "folder .*empty holds no files"), ("empty file", "the input text is empty")],
)
def test_bad_inputs(tmp_path, kind, message):
    if kind == "missing":
        path = tmp_path / "missing.txt"
    elif kind == "empty folder":
        path = tmp_path / "empty"
        path.mkdir()
    else:
        path = tmp_path / "empty.txt"
        path.write_text("")
    with pytest.raises(GptkitError, match=message):
        prepare_text([path], tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_no_input_files(tmp_path):
    with pytest.raises(GptkitError, match="no input files"):
        prepare_text([], tmp_path / "data")


def test_out_is_a_file(tmp_path, text_tree):
    (tmp_path / "data").write_text("x")
    with pytest.raises(GptkitError, match="exists and is not a folder"):
        prepare_text([text_tree / "c.txt"], tmp_path / "data")


def test_many_shards_form_one_stream(tmp_path, small_corpus):
    out = tmp_path / "data"
    meta = prepare_documents([Document("c", small_corpus)], out, "char", val_fraction=0.1, shard_tokens=4000)
    n_train = int(len(small_corpus) * 0.9)
    assert meta["splits"]["train"]["shards"] == [f"train_{i:06d}.bin" for i in range(-(-n_train // 4000))]
    assert [len(read_shard(out / n)) for n in meta["splits"]["train"]["shards"]][:-1] == [4000] * (len(meta["splits"]["train"]["shards"]) - 1)
    assert split_text(out, "train") == small_corpus[:n_train]
    assert split_text(out, "val") == small_corpus[n_train:]


def test_re_preparing_replaces_the_old_folder(tmp_path, small_corpus):
    out = tmp_path / "data"
    prepare_documents([Document("c", small_corpus)], out, "char", shard_tokens=4000)
    assert len(list(out.glob("train_*.bin"))) > 1
    prepare_documents([Document("c", "just a little text, twice: just a little text\n")], out, "char")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "tokenizer.json", "train_000000.bin", "val_000000.bin"]
    assert split_text(out, "train") + split_text(out, "val") == "just a little text, twice: just a little text\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging or old folder left behind


def test_folder_with_foreign_files_is_refused(tmp_path, small_corpus):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(GptkitError, match="already holds files that are not gptkit data \\(thesis.tex") as info:
        prepare_documents([Document("c", small_corpus)], out, "char")
    assert "empty or new folder" in info.value.hint
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    assert (out / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_empty_existing_folder_is_used(tmp_path, small_corpus):
    out = tmp_path / "data"
    out.mkdir()
    prepare_documents([Document("c", small_corpus)], out, "char")
    assert (out / "meta.json").is_file()


def test_unknown_tokenizer(tmp_path, text_tree):
    with pytest.raises(UsageError, match="tokenizer 'bpe-9000' is neither a pretrained encoding nor an existing path") as info:
        prepare_text([text_tree / "c.txt"], tmp_path / "data", "bpe-9000")
    assert "bpe:N" in info.value.hint  # the spelling the user probably meant
    assert not (tmp_path / "data").exists()


def test_prepare_text_skips_its_own_output_folder_inside_an_input_folder(tmp_path):
    """`prepare text notes/ --out notes/data` twice: the second run must not read its own shards as input."""
    from gptkit.prepare import prepare_text

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("hello world, " * 200, encoding="utf-8")
    first = prepare_text([notes], notes / "data")
    second = prepare_text([notes], notes / "data")
    assert [f["path"] for f in second["source"]["files"]] == [str(notes / "a.txt")]
    assert second["splits"] == first["splits"]
