"""`gptkit export --format onnx`, checked against the real onnxruntime.

Both graphs (plain, and with key/value-cache inputs) are exported once per model family; onnxruntime's
logits match gptkit's at shapes other than the export's, and greedy decoding through the cache graph
gives gptkit's tokens.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export_fixtures import CASES, gptkit_greedy, make_checkpoint

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'gptkit[export]')")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'gptkit[export]')")
pytest.importorskip("onnxscript", reason="onnxscript (torch.onnx's exporter) is not installed (pip install 'gptkit[export]')")

from gptkit.export import export  # noqa: E402
from gptkit.export.onnx import kv_path, onnx_greedy  # noqa: E402
from gptkit.tokenizers import CharTokenizer  # noqa: E402

ONNX_CASES = ["gpt2-nobias-untied-padded", "llama-tied-padded"]  # bias off, untied, tied, padded, both families


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.train("ROMEO: But soft, what light through yonder window breaks?\nJULIET: Ay me!\n")


@pytest.fixture(scope="module", params=ONNX_CASES)
def exported(request, tmp_path_factory, tokenizer):
    """(case, checkpoint, model.onnx, gptkit model): exported once for all tests of the case."""
    from gptkit.checkpoint import load_checkpoint

    folder = tmp_path_factory.mktemp(request.param)
    ckpt = make_checkpoint(folder / "ckpt.safetensors", tokenizer, **CASES[request.param])
    path = export(ckpt, "onnx", folder / "model.onnx")
    return request.param, ckpt, path, load_checkpoint(ckpt).build_model("cpu").eval()


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_logits_match_at_shapes_other_than_the_export_one(exported, tokenizer):
    _, _, path, model = exported
    plain = session(path)
    g = torch.Generator().manual_seed(1)
    for B, T in ((1, 1), (1, 17), (4, 128)):  # exported with (2, 3)
        idx = torch.randint(0, tokenizer.vocab_size, (B, T), generator=g)
        with torch.no_grad():
            want = model.unpadded(model(idx)[0]).numpy()
        got = plain.run(["logits"], {"input_ids": idx.numpy()})[0]
        assert got.shape == (B, T, tokenizer.vocab_size)  # padding cut off in the graph
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_the_saved_graph_has_symbolic_batch_and_sequence_axes(exported):
    _, _, path, _ = exported
    for file in (path, kv_path(path)):
        graph = onnx.load(str(file)).graph
        dims = graph.input[0].type.tensor_type.shape.dim
        assert all(d.dim_param and not d.dim_value for d in dims), f"{file.name}: {dims}"


def test_the_cache_graph_prefills_then_decodes_one_position_at_a_time(exported, tokenizer):
    _, _, path, model = exported
    cached = session(kv_path(path))
    c = model.config
    idx = torch.randint(0, tokenizer.vocab_size, (3, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model.unpadded(model(idx)[0]).numpy()
    empty = np.zeros((c.n_layer, 3, c.n_head, 0, c.n_embd // c.n_head), dtype=np.float32)
    logits, keys, values = cached.run(None, {"input_ids": idx[:, :9].numpy(), "past_keys": empty, "past_values": empty})
    np.testing.assert_allclose(logits, want[:, :9], atol=1e-4, rtol=0)
    for t in range(9, 12):
        logits, keys, values = cached.run(None, {"input_ids": idx[:, t : t + 1].numpy(), "past_keys": keys, "past_values": values})
        assert keys.shape[3] == values.shape[3] == t + 1  # one more cached position per step
        np.testing.assert_allclose(logits[:, 0], want[:, t], atol=1e-4, rtol=0)


def test_greedy_decoding_through_onnxruntime_gives_gptkits_tokens(exported, tokenizer):
    _, ckpt, path, _ = exported
    prompt = tokenizer.encode("ROMEO:")
    want = gptkit_greedy(ckpt, prompt, 100)
    assert onnx_greedy(kv_path(path), prompt, 100) == want
    assert onnx_greedy(path, prompt, 20, kv_cache=False) == want[:20]


def test_cli_prints_only_the_path(tmp_path, tokenizer):
    from tokenizer_fixtures import run_gptkit

    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", tokenizer, **CASES["gpt2-bias-tied"])
    out = tmp_path / "m.onnx"
    result = run_gptkit("export", "--ckpt", str(ckpt), "--format", "onnx", "--out", str(out), "--no-kv-cache", "--json")
    assert json.loads(result.stdout)["path"] == str(out)  # stdout holds the JSON and nothing else
    assert out.is_file() and not kv_path(out).exists()
