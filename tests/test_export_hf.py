"""`gptkit export --format hf`, checked against the real transformers and tokenizers libraries.

A tiny model of each exportable family (GPT-2: biases on and off; Llama), tied and untied, with a padded
vocabulary, goes out as a Hugging Face folder and is loaded by AutoModelForCausalLM / AutoTokenizer:
logits within 1e-4, 100 greedy tokens identical, the same token ids on a mixed corpus, and the folder read
back gives the original model.
"""

from __future__ import annotations

import json

import pytest
import torch

from export_fixtures import CASES, gptkit_greedy, make_checkpoint
from tokenizer_fixtures import CJK, EMOJI, PORTUGUESE, shakespeare, small_bpe, tokenizer_kinds

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'gptkit[export]')")
pytest.importorskip("tokenizers", reason="tokenizers is not installed (pip install 'gptkit[export]')")

from gptkit.export import export  # noqa: E402
from gptkit.tokenizers import CharTokenizer  # noqa: E402

CRLF = "First line\r\nsecond line\r\n\r\n  indented\tand tabbed\r\nend"


def mixed_corpus() -> str:
    """English, Portuguese with accents, emoji and CJK, CRLF lines, odd spaces and digits."""
    return (
        shakespeare()[500_000:506_000] + PORTUGUESE + EMOJI + CJK + CRLF
        + " non\u00a0breaking, ideographic\u3000space, it's IT'S 2024-12-01 3.14159  \n\n\n   trailing   "
    )


@pytest.fixture(scope="module")
def char_tokenizer():
    return CharTokenizer.train(mixed_corpus())


def load_pair(tmp_path, tokenizer, case):
    """(gptkit model, transformers model, checkpoint, folder) for one CASES entry."""
    from gptkit.checkpoint import load_checkpoint

    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", tokenizer, **CASES[case])
    folder = export(ckpt, "hf", tmp_path / "hf")
    ours = load_checkpoint(ckpt).build_model("cpu").eval()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    return ours, theirs, ckpt, folder


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers_at_two_lengths(tmp_path, char_tokenizer, case):
    ours, theirs, _, folder = load_pair(tmp_path, char_tokenizer, case)
    expected = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[case.split("-")[0]]
    assert type(theirs).__name__ == expected
    g = torch.Generator().manual_seed(0)
    for T in (9, 128):
        idx = torch.randint(0, char_tokenizer.vocab_size, (2, T), generator=g)
        with torch.no_grad():
            want = ours.unpadded(ours(idx)[0])
            got = theirs(idx).logits
        assert got.shape == want.shape == (2, T, char_tokenizer.vocab_size)  # padding stripped
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_100_greedy_tokens_match_gptkit_sample(tmp_path, char_tokenizer, case):
    _, theirs, ckpt, _ = load_pair(tmp_path, char_tokenizer, case)
    prompt = char_tokenizer.encode("ROMEO:")
    want = gptkit_greedy(ckpt, prompt, 100)
    # No stop token (gptkit_greedy has none either): <|endoftext|> is just another greedy pick here.
    theirs.generation_config.eos_token_id = None
    got = theirs.generate(torch.tensor([prompt]), max_new_tokens=100, do_sample=False, pad_token_id=0)
    got = got[0, len(prompt):].tolist()
    assert got == want


def test_100_greedy_tokens_match_the_sample_command(tmp_path, char_tokenizer):
    """The same through the real CLI: `gptkit sample --temperature 0` prints what transformers generates."""
    from tokenizer_fixtures import run_gptkit

    _, theirs, ckpt, folder = load_pair(tmp_path, char_tokenizer, "llama-tied-padded")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    result = run_gptkit("sample", "--ckpt", str(ckpt), "--prompt", "JULIET:", "--temperature", "0", "--max-new-tokens", "100",
                        "--no-echo", "--no-stop-at-eot", "--device", "cpu")
    theirs.generation_config.eos_token_id = None
    ids = hf_tokenizer("JULIET:", return_tensors="pt").input_ids
    generated = theirs.generate(ids, max_new_tokens=100, do_sample=False, pad_token_id=0)[0, ids.shape[1]:]
    assert result.stdout.decode("utf-8") == hf_tokenizer.decode(generated) + "\n"


def test_the_rotary_permutation_is_needed(tmp_path, char_tokenizer, monkeypatch):
    """gptkit turns channel pairs (2i, 2i+1), transformers' Llama (i, i + D/2): without the row permutation
    the exported model computes something else (so the parity above proves the permutation right)."""
    from gptkit.export import hf

    monkeypatch.setattr(hf, "pairs_to_halves", lambda weight, n_head: weight)
    ours, theirs, _, _ = load_pair(tmp_path, char_tokenizer, "llama-untied")
    idx = torch.arange(20).view(1, 20) % char_tokenizer.vocab_size
    with torch.no_grad():
        assert (ours.unpadded(ours(idx)[0]) - theirs(idx).logits).abs().max() > 1e-2


def tokenizer_cases():
    return tokenizer_kinds(mixed_corpus(), shakespeare()[:20_000])  # char:unk: the CJK etc. become <unk>


@pytest.mark.parametrize("kind", tokenizer_cases())
def test_autotokenizer_gives_gptkits_ids_on_a_mixed_corpus(tmp_path, kind):
    from gptkit.export.tokenizer_files import write_tokenizer_files

    tokenizer = tokenizer_cases()[kind]()
    write_tokenizer_files(tokenizer, tmp_path, model_max_length=1 << 20)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = mixed_corpus()
    want = tokenizer.encode(text)
    got = hf_tokenizer(text, add_special_tokens=False).input_ids
    assert got == want
    assert hf_tokenizer.decode(got) == tokenizer.decode(want)
    if tokenizer.eot_id is not None:
        assert hf_tokenizer.eos_token_id == tokenizer.eot_id


def test_round_trip_gives_the_original_logits(tmp_path, char_tokenizer):
    """The exported folder read back into gptkit (hf.read_hf_folder) is the model that was exported, with
    its tokenizer: a Checkpoint that a run's init_from can load (Checkpoint.load_into), or save again."""
    from gptkit.checkpoint import load_checkpoint, save_checkpoint
    from gptkit.export.hf import read_hf_folder
    from gptkit.model import GPT

    for case in ("gpt2-nobias-untied-padded", "gpt2-bias-tied", "llama-tied-padded"):
        ours, _, _, folder = load_pair(tmp_path / case, char_tokenizer, case)
        back = read_hf_folder(folder)
        model = GPT(back.model_config)
        back.load_into(model)  # what train(init_from=...) does with a checkpoint
        save_checkpoint(tmp_path / case / "back.safetensors", model, back.tokenizer_spec, step=back.step, val_loss=back.val_loss)
        again = load_checkpoint(tmp_path / case / "back.safetensors")
        idx = torch.arange(30).view(1, 30) % char_tokenizer.vocab_size
        with torch.no_grad():
            torch.testing.assert_close(again.build_model().eval()(idx)[0], ours.unpadded(ours(idx)[0]), atol=1e-5, rtol=0)
        assert (back.model_config.bias, back.model_config.tie_embeddings) == (ours.config.bias, ours.config.tie_embeddings)
        assert again.tokenizer().encode("ROMEO:") == char_tokenizer.encode("ROMEO:") and again.val_loss == 2.5


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_folders_load_in_that_dtype(tmp_path, char_tokenizer, dtype):
    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", char_tokenizer, **CASES["gpt2-bias-tied"])
    folder = export(ckpt, "hf", tmp_path / "hf", dtype=dtype)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype="auto")
    assert next(model.parameters()).dtype == getattr(torch, dtype)


def test_the_folder_has_a_model_card_and_generation_config(tmp_path, char_tokenizer):
    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", char_tokenizer, **CASES["llama-untied"])
    folder = export(ckpt, "hf", tmp_path / "hf")
    names = {p.name for p in folder.iterdir()}
    assert names == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                     "README.md", "gptkit.json"}
    card = (folder / "README.md").read_text()
    assert "LlamaForCausalLM" in card and "2.5000" in card and "`char`" in card and "data/tiny" in card
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == char_tokenizer.eot_id
    assert json.loads((folder / "config.json").read_text())["hidden_act"] == "silu"


@pytest.mark.parametrize("approximate, activation", [("none", "gelu"), ("tanh", "gelu_new")])
def test_exact_gelu_and_the_tanh_form_are_told_apart(tmp_path, char_tokenizer, approximate, activation):
    """gptkit's GELU is the exact (erf) form, transformers' "gelu"; a model imported from GPT-2's weights keeps
    the tanh form (gelu_approximate = "tanh"), transformers' "gelu_new". Either way the logits match."""
    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", char_tokenizer, gelu_approximate=approximate, **CASES["gpt2-bias-tied"])
    folder = export(ckpt, "hf", tmp_path / "hf")
    assert json.loads((folder / "config.json").read_text())["activation_function"] == activation
    from gptkit.checkpoint import load_checkpoint

    ours = load_checkpoint(ckpt).build_model("cpu").eval()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    idx = torch.arange(40).view(1, 40) % char_tokenizer.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(theirs(idx).logits, ours.unpadded(ours(idx)[0]), atol=1e-4, rtol=0)


def test_gptkits_own_hf_import_reads_the_export_back(tmp_path):
    """hf_import (what train(init_from=DIR) uses for a Hugging Face folder) takes an exported GPT-2 back."""
    from gptkit.hf_import import load_init_checkpoint

    tokenizer = small_bpe("gpt2")
    ours, _, _, folder = load_pair(tmp_path, tokenizer, "gpt2-bias-tied")
    back = load_init_checkpoint(folder)
    idx = torch.arange(50).view(1, 50) * 7 % tokenizer.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(back.build_model().eval()(idx)[0], ours.unpadded(ours(idx)[0]), atol=1e-5, rtol=0)
    text = mixed_corpus()
    assert back.tokenizer().encode(text) == tokenizer.encode(text)


# ---------------------------------------------------------------------------------------------------
# The command line and its refusals


def test_cli_prints_the_folder(tmp_path, char_tokenizer):
    from tokenizer_fixtures import run_gptkit

    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", char_tokenizer, **CASES["gpt2-bias-tied"])
    result = run_gptkit("export", "--ckpt", str(ckpt), "--format", "hf", "--out", str(tmp_path / "hf"))
    assert result.stdout.decode().strip() == str(tmp_path / "hf")
    result = run_gptkit("export", "--ckpt", str(ckpt), "--format", "hf", "--out", str(tmp_path / "hf2"), "--json")
    info = json.loads(result.stdout)
    assert info == {"format": "hf", "path": str(tmp_path / "hf2"), "architecture": "gpt2", "dtype": "float32"}


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(position="learned", norm="layernorm", mlp="relu2"), ["relu2"]),
        (dict(position="rope", norm="layernorm", mlp="swiglu", bias=False), ["norm = layernorm", "rmsnorm"]),
        (dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=True), ["bias = True"]),
        (dict(position="learned", norm="rmsnorm", mlp="gelu"), ["norm = rmsnorm", "layernorm"]),
    ],
)
def test_models_no_target_can_express_are_refused_by_name(tmp_path, char_tokenizer, options, words):
    from tokenizer_fixtures import run_gptkit

    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", char_tokenizer, **options)
    result = run_gptkit("export", "--ckpt", str(ckpt), "--format", "hf", "--out", str(tmp_path / "hf"), check=False)
    message = result.stderr.decode()
    assert result.returncode == 1 and "Error: this model cannot be exported" in message and "Traceback" not in message
    assert all(word in message for word in words), message
    assert "what exports: GPT-2" in message
    assert not (tmp_path / "hf").exists()


def test_a_dtype_the_format_cannot_store_is_bad_usage(tmp_path, char_tokenizer):
    from tokenizer_fixtures import run_gptkit

    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", char_tokenizer, **CASES["gpt2-bias-tied"])
    result = run_gptkit("export", "--ckpt", str(ckpt), "--format", "gguf", "--out", str(tmp_path / "m.gguf"), "--dtype", "bfloat16", check=False)
    assert result.returncode == 2 and "does not take --dtype bfloat16" in result.stderr.decode()


def test_an_adapter_checkpoint_is_refused(tmp_path, char_tokenizer):
    """An adapter holds only its own weights: there is nothing whole to export until it is merged."""
    from gptkit.checkpoint import load_checkpoint, save_adapter
    from tokenizer_fixtures import run_gptkit

    base = make_checkpoint(tmp_path / "base.safetensors", char_tokenizer, **CASES["gpt2-bias-tied"])
    adapter = tmp_path / "adapter.safetensors"
    save_adapter(adapter, {"lora_A": torch.zeros(2, 32)}, load_checkpoint(base), step=1)
    result = run_gptkit("export", "--ckpt", str(adapter), "--format", "hf", "--out", str(tmp_path / "hf"), check=False)
    message = result.stderr.decode()
    assert result.returncode == 1 and "is an adapter, not a full model" in message and "merge the adapter" in message
