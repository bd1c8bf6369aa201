"""The round trip: `gptkit export --format hf`, then `gptkit train --init-from DIR --max-iters 0 --out D2`,
gives the original model back (logits within 1e-5 in fp32, the same token ids), for every family the
export writes (GPT-2 with and without biases, tied and untied, exact and tanh GELU; Llama tied and
untied) and every tokenizer kind; and real transformers Llama folders come in (logits within 1e-4) or
are refused with the feature named."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from export_fixtures import CASES, make_checkpoint
from tokenizer_fixtures import CJK, EMOJI, PORTUGUESE, small_bpe, small_sentencepiece, tokenizer_kinds

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'gptkit[export]')")
pytest.importorskip("tokenizers", reason="tokenizers is not installed (pip install 'gptkit[export]')")

from gptkit.checkpoint import load_checkpoint  # noqa: E402
from gptkit.errors import GptkitError  # noqa: E402
from gptkit.export import export  # noqa: E402
from gptkit.tokenizers import CharTokenizer, load_tokenizer  # noqa: E402

TEXT = "ROMEO: But soft, what light?\r\n" + PORTUGUESE + EMOJI + CJK + "  tabs\tand  spaces 2024-12-01\n"


def tokenizers_by_kind():
    return tokenizer_kinds(TEXT, "ROMEO: abcdefghijklmnopqrstuvwxyz\n")


# family case (export_fixtures.CASES, plus the tanh GELU) x a tokenizer kind
ROUND_TRIPS = {
    "gpt2-bias-tied/char": ("gpt2-bias-tied", {}, "char"),
    "gpt2-bias-tied-tanh/char:unk": ("gpt2-bias-tied", {"gelu_approximate": "tanh"}, "char:unk"),
    "gpt2-nobias-untied-padded/bpe-gpt4": ("gpt2-nobias-untied-padded", {}, "bpe-gpt4-pattern"),
    "llama-tied-padded/sp-unigram": ("llama-tied-padded", {}, "sp-unigram"),
    "llama-untied/bpe-gpt2": ("llama-untied", {}, "bpe-gpt2-pattern"),
}


def logits_of(ckpt_path, idx):
    model = load_checkpoint(ckpt_path).build_model("cpu").eval()
    with torch.no_grad():
        return model.unpadded(model(idx)[0])


@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_export_then_train_init_from_gives_the_original_back(tmp_path, run_cli, name):
    case, extra, kind = ROUND_TRIPS[name]
    tokenizer = tokenizers_by_kind()[kind]()
    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", tokenizer, **CASES[case], **extra)
    folder = export(ckpt, "hf", tmp_path / "hf")
    result = run_cli("train", "--init-from", folder, "--max-iters", "0", "--out", tmp_path / "back")
    assert result.code == 0, result.stderr
    back = tmp_path / "back" / "ckpt.safetensors"
    idx = torch.randint(0, tokenizer.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits_of(back, idx), logits_of(ckpt, idx), atol=1e-5, rtol=0)
    original, again = load_checkpoint(ckpt).model_config, load_checkpoint(back).model_config
    for field in ("position", "norm", "mlp", "bias", "tie_embeddings", "gelu_approximate", "n_layer", "n_head", "n_embd", "block_size"):
        assert getattr(again, field) == getattr(original, field), field
    assert load_tokenizer(back).encode(TEXT) == tokenizer.encode(TEXT)
    assert load_tokenizer(folder).encode(TEXT) == tokenizer.encode(TEXT)  # the folder as a --tokenizer too


@pytest.mark.parametrize("kind", [k for k in tokenizers_by_kind() if not k.startswith("sp-")])
def test_tokenizer_json_alone_is_rebuilt_with_the_same_ids(tmp_path, kind):
    """Without gptkit.json (any Hugging Face folder), tokenizer.json itself is read: gptkit's char and
    every byte-level BPE (GPT-2's pre-tokenizer or a custom split regex) come back id for id."""
    from gptkit.export.tokenizer_files import write_tokenizer_files

    tokenizer = tokenizers_by_kind()[kind]()
    write_tokenizer_files(tokenizer, tmp_path, model_max_length=1024)
    rebuilt = load_tokenizer(tmp_path)
    assert rebuilt.spec()["kind"] == ("char" if kind.startswith("char") else "hf-bpe")
    assert rebuilt.vocab_size == tokenizer.vocab_size and rebuilt.eot_id == tokenizer.eot_id
    assert rebuilt.encode(TEXT) == tokenizer.encode(TEXT)
    assert rebuilt.decode(rebuilt.encode(TEXT)) == tokenizer.decode(tokenizer.encode(TEXT))


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_a_sentencepiece_tokenizer_json_alone_is_refused_by_name(tmp_path, model_type):
    from gptkit.export.tokenizer_files import write_tokenizer_files

    write_tokenizer_files(small_sentencepiece(model_type), tmp_path, model_max_length=1024)
    with pytest.raises(GptkitError, match="SentencePiece-style .* which gptkit cannot rebuild") as e:
        load_tokenizer(tmp_path)
    assert "gptkit.json" in e.value.hint


def test_without_gptkit_json_a_bias_free_gpt2_keeps_its_zero_biases(tmp_path):
    """A plain Hugging Face GPT-2 folder holds biases, zero or not; only a gptkit export's record says the
    zeros stand for none. Either way the logits are the original's."""
    from gptkit.hf_import import load_init_weights

    tokenizer = small_bpe("gpt2")
    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", tokenizer, **CASES["gpt2-nobias-untied-padded"])
    folder = export(ckpt, "hf", tmp_path / "hf")
    (folder / "gptkit.json").unlink()
    config, state, spec = load_init_weights(folder)
    assert config.bias and not config.tie_embeddings and spec["kind"] == "hf-bpe"
    from gptkit.model import GPT

    model = GPT(config).eval()
    model.load_state_dict(state, strict=True)
    idx = torch.arange(30).view(1, 30) * 5 % tokenizer.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], logits_of(ckpt, idx), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------
# A real transformers Llama


@pytest.fixture(scope="module", params=[4, 2], ids=["multi-head", "grouped-query"])
def hf_llama(tmp_path_factory, request):
    """A random LlamaForCausalLM (untied, 64 wide, 4 query heads; 4 or 2 key/value heads) saved by
    save_pretrained, with a byte-level BPE."""
    from test_hf_import import train_bpe

    from gptkit.hf_llama import swiglu_hidden

    folder = tmp_path_factory.mktemp("hf-llama")
    tok = train_bpe(folder)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=swiglu_hidden(64), num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=request.param, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # spread the weights (init std 0.02 leaves every logit near 0)
        for p in model.parameters():
            p.mul_(10.0 if p.dim() == 2 else 1.0)
    model.save_pretrained(str(folder))
    return folder, model, tok


def test_a_transformers_llama_folder_comes_in_with_its_logits(hf_llama, tmp_path, run_cli):
    folder, hf_model, tok = hf_llama
    result = run_cli("train", "--init-from", folder, "--max-iters", "0", "--out", tmp_path / "back")
    assert result.code == 0, result.stderr
    ckpt = load_checkpoint(tmp_path / "back" / "ckpt.safetensors")
    assert (ckpt.model_config.position, ckpt.model_config.mlp, ckpt.model_config.tie_embeddings) == ("rope", "swiglu", False)
    assert ckpt.model_config.kv_heads == hf_model.config.num_key_value_heads
    text = "The quick brown fox. Ação e coração 🙂 東京\r\n"
    ids = torch.tensor([tok.encode(text).ids * 3])[:, :60]
    with torch.no_grad():
        ours = ckpt.build_model("cpu").eval()(ids)[0]
        theirs = hf_model(ids).logits
    assert theirs.abs().max() > 1.0  # logits far from zero: the comparison means something
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert ckpt.tokenizer().encode(text) == tok.encode(text).ids


def _set_rope(config: dict, theta=None, scaling=None) -> None:
    """Write a rope setting the way either transformers major version reads it."""
    params = config.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": 10000.0})
    if theta is not None:
        config["rope_theta"] = params["rope_theta"] = theta
    if scaling is not None:
        params["rope_type"] = scaling
        config["rope_scaling"] = {"rope_type": scaling, "factor": 2.0}


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: c.update(num_key_value_heads=3), "num_key_value_heads 3 (it must divide num_attention_heads 4)"),
        (lambda c: c.update(head_dim=32), "head_dim 32"),
        (lambda c: _set_rope(c, scaling="linear"), "rope scaling (linear)"),
        (lambda c: _set_rope(c, theta=500000.0), "rope_theta 500000"),
        (lambda c: c.update(attention_bias=True), "attention biases"),
        (lambda c: c.update(rms_norm_eps=1e-6), "rms_norm_eps 1e-06"),
        (lambda c: c.update(intermediate_size=200), "intermediate_size 200"),
        (lambda c: c.update(hidden_act="gelu"), "hidden_act 'gelu'"),
    ],
)
def test_llama_features_gptkit_lacks_are_refused_by_name(hf_llama, tmp_path, run_cli, change, words):
    folder, _, _ = hf_llama
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    config = json.loads((other / "config.json").read_text())
    change(config)
    (other / "config.json").write_text(json.dumps(config))
    result = run_cli("train", "--init-from", other, "--max-iters", "0", "--out", tmp_path / "back")
    assert result.code == 1 and "Traceback" not in result.stderr
    assert words in result.stderr and "which gptkit's model does not compute" in result.stderr, result.stderr
    assert not (tmp_path / "back" / "ckpt.safetensors").exists()


def test_another_model_type_is_refused(hf_llama, tmp_path):
    from gptkit.hf_import import load_init_weights

    folder, _, _ = hf_llama
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    with pytest.raises(GptkitError, match="'mistral' model; gptkit imports GPT-2 and Llama models only"):
        load_init_weights(other)


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", "gpt4o"])
def test_the_exported_split_regex_cuts_tiktokens_chunks(pattern):
    """cl100k_base's (gptkit's gpt4) `\\p{N}{1,3}+` is possessive for tiktoken but a repetition for
    Hugging Face's Oniguruma: exported as is, "2024" would be one chunk instead of "202" + "4"."""
    import regex

    from gptkit.export.tokenizer_files import hf_tokenizer
    from gptkit.tokenizers.bpe import PATTERNS

    text = "In 2024-12-01, 1234567 users wrote 3.14159  and  IT'S\r\n  ok"
    want = regex.findall(PATTERNS[pattern], text)
    backend = hf_tokenizer(small_bpe(pattern))
    got = [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
    decoded = [bytes(_byte_decoder()[c] for c in piece).decode() for piece in got]
    assert decoded == want


def _byte_decoder():
    from gptkit.tokenizers.hf_gpt2 import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def test_a_tokenizer_json_whose_regex_the_engines_read_differently_is_refused(tmp_path):
    from gptkit.export.tokenizer_files import write_tokenizer_files

    write_tokenizer_files(small_bpe("gpt4"), tmp_path, model_max_length=1024)
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    split = data["pre_tokenizer"]["pretokenizers"][0]
    split["pattern"]["Regex"] = split["pattern"]["Regex"].replace(r"\p{N}{1,3}", r"\p{N}{1,3}+")
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(GptkitError, match=r"split regex has \{n,m\}\+"):
        load_tokenizer(tmp_path)


def test_zero_biases_stay_biases_when_the_export_says_the_model_had_them(tmp_path):
    """gptkit.json's model_config decides: a model with biases that happen to be zero keeps them."""
    from gptkit.hf_import import load_init_weights

    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", CharTokenizer.train(TEXT), **CASES["gpt2-bias-tied"])
    folder = export(ckpt, "hf", tmp_path / "hf")
    from safetensors.torch import load_file, save_file

    weights = {k: (v.zero_() if k.endswith(".bias") and ".attn.bias" not in k else v) for k, v in load_file(folder / "model.safetensors").items()}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert load_init_weights(folder)[0].bias is True
    record = json.loads((folder / "gptkit.json").read_text())
    record["model_config"]["bias"] = False
    (folder / "gptkit.json").write_text(json.dumps(record))
    config, state, _ = load_init_weights(folder)
    assert config.bias is False and not any(name.endswith(".bias") for name in state)
