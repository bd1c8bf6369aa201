"""The swappable parts (docs/components.md) outside the model: export and checkpoints.

  * every export format refuses, by name, what its runtimes cannot express (ALiBi, no positions, QK-norm,
    a window, the parallel block, GPT-2 with fewer key/value heads), before writing anything;
  * Llama's grouped-query attention (num_key_value_heads) goes out to transformers (and back), llama.cpp
    and onnxruntime with gptkit's logits and greedy tokens;
  * a checkpoint written before the new settings existed loads with their defaults (GPT-2's), and weights
    of another attention layout are refused by name.
"""

from __future__ import annotations

import pytest
import torch

from gptkit.checkpoint import load_checkpoint
from gptkit.config import ModelConfig
from gptkit.errors import GptkitError
from gptkit.model import GPT

VOCAB = 67


def tiny(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(**{**dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=4, n_embd=32), **overrides})).eval()


# --- export: what a format cannot express is refused by name ----------------------------------------------

LLAMA = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False)
UNEXPORTABLE = {
    "alibi": (dict(position="alibi"), "ALiBi"),
    "no-positions": (dict(position="none"), "position = none"),
    "qk-norm-llama": (dict(LLAMA, qk_norm=True), "QK-norm"),
    "window-llama": (dict(LLAMA, attention_window=8), "sliding-window"),
    "grouped-query-gpt2": (dict(n_head=4, n_kv_head=2), "GPT-2 has one key/value head per query head"),
    "parallel": (dict(block="parallel"), "parallel block"),
    "parallel-llama": (dict(LLAMA, block="parallel"), "parallel block"),
}


@pytest.mark.parametrize("case", list(UNEXPORTABLE))
@pytest.mark.parametrize("format", ["hf", "onnx", "gguf"])
def test_every_export_format_refuses_what_it_cannot_express(case, format, tmp_path):
    from export_fixtures import make_checkpoint

    from gptkit.export import export
    from gptkit.tokenizers import CharTokenizer

    options, words = UNEXPORTABLE[case]
    tokenizer = CharTokenizer.train("abcdefghij \n")
    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", tokenizer, **options)
    out = tmp_path / ("hf" if format == "hf" else f"model.{format}")
    with pytest.raises(GptkitError) as refused:
        export(ckpt, format, out)
    assert "this model cannot be exported" in refused.value.message and words in refused.value.message
    assert "what exports" in refused.value.hint
    assert not out.exists()


# --- export: Llama expresses grouped-query attention (num_key_value_heads) ---------------------------------

LLAMA_GQA = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False, n_head=4, n_kv_head=2)


@pytest.fixture(scope="module")
def gqa_checkpoint(tmp_path_factory):
    """(tokenizer, checkpoint, gptkit model) of a Llama-family model with 4 query and 2 key/value heads."""
    from export_fixtures import make_checkpoint
    from tokenizer_fixtures import small_bpe

    tokenizer = small_bpe("gpt2")
    ckpt = make_checkpoint(tmp_path_factory.mktemp("gqa") / "ckpt.safetensors", tokenizer, **LLAMA_GQA)
    return tokenizer, ckpt, load_checkpoint(ckpt).build_model("cpu").eval()


def our_logits(model, ids: list[int]):
    with torch.no_grad():
        return model.unpadded(model(torch.tensor([ids]))[0])[0].numpy()


def test_grouped_query_llama_goes_to_transformers_and_back(gqa_checkpoint, tmp_path):
    transformers = pytest.importorskip("transformers")
    from export_fixtures import gptkit_greedy

    from gptkit.export import export
    from gptkit.export.hf import read_hf_folder

    tokenizer, ckpt, model = gqa_checkpoint
    folder = export(ckpt, "hf", tmp_path / "hf")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert (theirs.config.num_attention_heads, theirs.config.num_key_value_heads) == (4, 2)
    assert theirs.model.layers[0].self_attn.k_proj.weight.shape == (16, 32)  # 2 heads x D = 8
    ids = tokenizer.encode("ROMEO: But soft, what light through yonder window breaks?")
    with torch.no_grad():
        got = theirs(torch.tensor([ids])).logits[0].numpy()
    assert abs(got - our_logits(model, ids)).max() < 1e-4
    with torch.no_grad():
        generated = theirs.generate(torch.tensor([ids[:5]]), max_new_tokens=30, do_sample=False)[0, 5:].tolist()
    assert generated == gptkit_greedy(ckpt, ids[:5], 30)
    back = read_hf_folder(folder)
    assert (back.model_config.n_head, back.model_config.n_kv_head) == (4, 2)
    saved = load_checkpoint(ckpt).state_dict
    assert back.state_dict.keys() == saved.keys() and all(torch.equal(back.state_dict[k], saved[k]) for k in saved)


def test_grouped_query_llama_runs_in_llama_cpp(gqa_checkpoint, tmp_path):
    pytest.importorskip("gguf")
    lib = pytest.importorskip("llama_cpp")
    import numpy as np
    from export_fixtures import gptkit_greedy
    from tokenizer_fixtures import shakespeare

    from gptkit.export import export

    tokenizer, ckpt, model = gqa_checkpoint
    path = export(ckpt, "gguf", tmp_path / "model.gguf")
    llama = lib.Llama(model_path=str(path), n_ctx=128, n_batch=128, logits_all=True, verbose=False, n_threads=1,
                      type_k=lib.GGML_TYPE_F32, type_v=lib.GGML_TYPE_F32)
    ids = tokenizer.encode(shakespeare()[:2000])[:128]
    llama.eval(ids)
    assert np.abs(np.asarray(llama.scores[: len(ids)]) - our_logits(model, ids)).max() < 1e-4
    llama.reset()
    prompt = ids[:6]
    llama.eval(prompt)
    tokens = []
    for _ in range(40):  # llama.cpp's own KV cache, of 2 key/value heads
        tokens.append(int(np.argmax(llama.scores[llama.n_tokens - 1])))
        llama.eval([tokens[-1]])
    assert tokens == gptkit_greedy(ckpt, prompt, 40)


def test_grouped_query_llama_runs_in_onnxruntime_with_its_smaller_cache(gqa_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from export_fixtures import gptkit_greedy

    from gptkit.export import export
    from gptkit.export.onnx import kv_path, onnx_greedy

    tokenizer, ckpt, model = gqa_checkpoint
    path = export(ckpt, "onnx", tmp_path / "model.onnx")
    import onnxruntime as ort

    cached = ort.InferenceSession(str(kv_path(path)), providers=["CPUExecutionProvider"])
    assert cached.get_inputs()[1].shape[2] == 2  # (L, batch, H_kv, past, D): 2 key/value heads cached
    prompt = tokenizer.encode("ROMEO:")
    want = gptkit_greedy(ckpt, prompt, 40)
    assert onnx_greedy(cached, prompt, 40) == want
    assert onnx_greedy(path, prompt, 10, kv_cache=False) == want[:10]


def test_the_cli_refusal_is_one_error_line_with_the_fix(tmp_path):
    from export_fixtures import make_checkpoint
    from tokenizer_fixtures import run_gptkit

    from gptkit.tokenizers import CharTokenizer

    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", CharTokenizer.train("abc \n"), position="alibi", qk_norm=True)
    result = run_gptkit("export", "--ckpt", str(ckpt), "--format", "gguf", "--out", str(tmp_path / "m.gguf"), check=False)
    message = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in message
    assert "Error: this model cannot be exported: ALiBi" in message and "QK-norm" in message and "what exports" in message


# --- checkpoints: old ones load as GPT-2, weights that do not fit are named ----------------------------------

NEW_FIELDS = ("block", "n_kv_head", "qk_norm", "attention_window")


def test_a_checkpoint_from_before_the_new_parts_loads_with_their_defaults(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from gptkit.checkpoint import save_checkpoint

    model = tiny(position="rope", tie_embeddings=False)
    path = tmp_path / "new.safetensors"
    save_checkpoint(path, model, {"kind": "char", "chars": [chr(i) for i in range(VOCAB)]}, step=1)
    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    saved = json.loads(metadata["model_config"])
    assert set(NEW_FIELDS) <= set(saved)
    metadata["model_config"] = json.dumps({k: v for k, v in saved.items() if k not in NEW_FIELDS})  # as written before
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=metadata)
    old = load_checkpoint(tmp_path / "old.safetensors")
    assert (old.model_config.block, old.model_config.n_kv_head, old.model_config.qk_norm, old.model_config.attention_window) == (
        "sequential", 0, False, 0)
    ids = torch.randint(VOCAB, (1, 10), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert torch.equal(old.build_model().eval()(ids)[0], model(ids)[0])


def test_weights_of_other_key_value_heads_are_refused_by_name():
    from gptkit.checkpoint import check_weights_fit

    shapes = {k: tuple(v.shape) for k, v in tiny().state_dict().items()}  # 4 key/value heads
    with pytest.raises(GptkitError) as refused:
        check_weights_fit(ModelConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=4, n_embd=32, n_kv_head=2), shapes)
    assert "n_kv_head 2" in refused.value.message and "blocks.0.attn.qkv.weight is (96, 32) in the file" in refused.value.message
    with pytest.raises(GptkitError, match="attn.q_norm.weight is missing"):
        check_weights_fit(ModelConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=4, n_embd=32, qk_norm=True), shapes)
