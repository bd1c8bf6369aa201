import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_MODEL, make_corpus
from gptkit.checkpoint import load_checkpoint, save_checkpoint
from gptkit.errors import GptkitError
from gptkit.evaluate import evaluate
from gptkit.model import GPT, ModelConfig
from gptkit.prepare import prepare_text
from gptkit.shards import Split, read_meta


def manual_loss(ckpt_path, data, split):
    """Mean cross-entropy over consecutive, non-overlapping windows of every shard, summed by hand."""
    ckpt = load_checkpoint(ckpt_path)
    model = ckpt.build_model().double().eval()
    T = ckpt.model_config.block_size
    total, count = 0.0, 0
    with torch.no_grad():
        for shard in Split.open(data, split).shards:
            tokens = torch.from_numpy(np.asarray(shard, dtype=np.int64))
            for start in range(0, len(tokens) - T, T):
                x, y = tokens[start : start + T], tokens[start + 1 : start + T + 1]
                logits, _ = model(x[None])
                total += F.cross_entropy(logits[0], y, reduction="sum").item()
                count += T
    return total / count, count


@pytest.mark.parametrize("split", ["val", "train"])
def test_loss_matches_a_manual_computation(tiny_run, split):
    result = evaluate(tiny_run.ckpt, tiny_run.data, split, device="cpu", batch_size=7)
    expected, count = manual_loss(tiny_run.ckpt, tiny_run.data, split)
    assert result["tokens"] == count
    assert result[f"{split}_loss"] == pytest.approx(expected, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result[f"{split}_loss"]), rel=1e-12)
    assert result["step"] == 30 and result["split"] == split
    assert result["checkpoint"] == str(tiny_run.ckpt) and result["data"] == str(tiny_run.data)


def test_batch_size_does_not_change_the_result(tiny_run):
    a = evaluate(tiny_run.ckpt, tiny_run.data, device="cpu", batch_size=1)
    b = evaluate(tiny_run.ckpt, tiny_run.data, device="cpu", batch_size=64)
    assert a["tokens"] == b["tokens"] and a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)


def test_max_batches(tiny_run):
    result = evaluate(tiny_run.ckpt, tiny_run.data, device="cpu", batch_size=4, max_batches=2)
    assert result["tokens"] == 2 * 4 * 16


def test_evaluate_is_deterministic_and_better_than_chance(tiny_run):
    a = evaluate(tiny_run.ckpt, tiny_run.data, device="cpu")
    assert a == evaluate(tiny_run.ckpt, tiny_run.data, device="cpu")
    assert a["val_loss"] < math.log(read_meta(tiny_run.data)["vocab_size"]) - 0.3


def test_bits_per_byte_with_multibyte_text(tmp_path):
    """bits/byte = loss * tokens / (bytes * ln 2): with 2-byte characters, half of loss / ln 2."""
    corpus = make_corpus(3000).replace("a", "ä").replace("e", "é")
    (tmp_path / "t.txt").write_text(corpus, encoding="utf-8")
    data = tmp_path / "data"
    meta = prepare_text([tmp_path / "t.txt"], data)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=meta["vocab_size"], **TINY_MODEL))
    ckpt = tmp_path / "ckpt.safetensors"
    save_checkpoint(ckpt, model, meta["tokenizer"], step=0)

    result = evaluate(ckpt, data, device="cpu")
    val = meta["splits"]["val"]
    assert val["bytes"] > val["tokens"]  # the multi-byte characters
    expected = result["val_loss"] * val["tokens"] / (val["bytes"] * math.log(2))
    assert result["bits_per_byte"] == pytest.approx(expected, rel=1e-12)
    # an untrained model is close to uniform over the vocabulary
    assert result["val_loss"] == pytest.approx(math.log(meta["vocab_size"]), abs=0.1)


def test_ascii_char_model_bits_per_byte_is_loss_over_ln2(tiny_run):
    result = evaluate(tiny_run.ckpt, tiny_run.data, device="cpu")
    assert result["bits_per_byte"] == pytest.approx(result["val_loss"] / math.log(2), rel=1e-12)


def test_tokenizer_mismatch(tiny_run, tmp_path):
    (tmp_path / "other.txt").write_text(make_corpus(3000, seed=5).upper())
    prepare_text([tmp_path / "other.txt"], tmp_path / "other")
    with pytest.raises(GptkitError) as info:
        evaluate(tiny_run.ckpt, tmp_path / "other", device="cpu")
    # both tokenizers are described, so the user sees how they differ
    ours, theirs = load_checkpoint(tiny_run.ckpt).tokenizer_spec, read_meta(tmp_path / "other")["tokenizer"]
    assert info.value.message == (
        f"the data in {tmp_path / 'other'} was tokenized differently (char, {len(theirs['chars'])} characters) "
        f"from the model in {tiny_run.ckpt} (char, {len(ours['chars'])} characters)"
    )
    assert len(theirs["chars"]) != len(ours["chars"])
    assert "model's tokenizer" in info.value.hint


def test_unknown_split_and_missing_inputs(tiny_run, tmp_path):
    with pytest.raises(GptkitError, match="has no 'test' split"):
        evaluate(tiny_run.ckpt, tiny_run.data, "test", device="cpu")
    with pytest.raises(GptkitError, match="data folder .* does not exist"):
        evaluate(tiny_run.ckpt, tmp_path / "nowhere", device="cpu")
    with pytest.raises(GptkitError, match="checkpoint .* does not exist"):
        evaluate(tmp_path / "none.safetensors", tiny_run.data, device="cpu")


def test_split_shorter_than_the_context(tiny_run, tmp_path):
    chars = load_checkpoint(tiny_run.ckpt).tokenizer_spec["chars"]
    # the same characters (so the same tokenizer), but too little text for one 16-token window of val
    (tmp_path / "t.txt").write_text((chars * 2)[: len(chars) * 2])
    meta = prepare_text([tmp_path / "t.txt"], tmp_path / "small", val_fraction=0.1)
    assert meta["tokenizer"] == load_checkpoint(tiny_run.ckpt).tokenizer_spec
    with pytest.raises(GptkitError, match="the val split has no shard longer than the context \\(16 tokens\\)"):
        evaluate(tiny_run.ckpt, tmp_path / "small", device="cpu")
