import ast
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import subprocess_env

import gptkit
from gptkit.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_resume_state,
    peek_checkpoint,
    save_adapter,
    save_checkpoint,
    save_resume_state,
    weights_checksum,
)
from gptkit.checkpoint_format import DamagedFile, TensorInfo, read_checkpoint_header, read_header
from gptkit.errors import GptkitError
from gptkit.model import GPT, ModelConfig
from gptkit.run_folder import load_run_checkpoint
from gptkit.tokenizers import CharTokenizer

SPEC = {"kind": "char", "chars": "\n !abcdefghijklmnopqrstuvwxyz"}
CONFIG = ModelConfig(vocab_size=len(SPEC["chars"]) + 1, block_size=16, n_layer=2, n_head=2, n_embd=32)


def tiny_model(seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG)


@pytest.fixture
def saved(tmp_path):
    model = tiny_model()
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, model, SPEC, step=42, train_loss=2.5, val_loss=2.75, train_config={"seed": 3, "data": "d"})
    return path, model


def header_of(path):
    """The safetensors header: an 8-byte little-endian length, then that much JSON."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), 8 + length


def rewrite(src, dst, **metadata_changes):
    """Copy a safetensors file, changing (or with None, deleting) metadata entries."""
    with safe_open(str(src), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for key, value in metadata_changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def test_round_trip(saved):
    path, model = saved
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.model_config == CONFIG
    assert ckpt.tokenizer_spec == SPEC
    assert (ckpt.step, ckpt.train_loss, ckpt.val_loss) == (42, 2.5, 2.75)
    assert ckpt.train_config == {"seed": 3, "data": "d"}
    assert ckpt.gptkit_version == gptkit.__version__
    original = model.state_dict()
    assert set(ckpt.state_dict) == set(original)
    for name, tensor in original.items():
        assert torch.equal(ckpt.state_dict[name], tensor), name
    assert isinstance(ckpt.tokenizer(), CharTokenizer) and ckpt.tokenizer().chars == SPEC["chars"]
    rebuilt = ckpt.build_model("cpu").eval()
    idx = torch.randint(CONFIG.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.equal(rebuilt(idx)[0], model.eval()(idx)[0])


def test_missing_losses_round_trip_as_none(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, tiny_model(), SPEC, step=0)
    ckpt = load_checkpoint(path)
    assert ckpt.train_loss is None and ckpt.val_loss is None and ckpt.train_config == {}


def test_file_is_safetensors_with_string_metadata_and_no_pickle(saved):
    path, _ = saved
    header, data_start = header_of(path)
    meta = header["__metadata__"]
    assert meta["format"] == "gptkit.checkpoint" and meta["format_version"] == "1"
    assert json.loads(meta["model_config"]) == CONFIG.to_dict()
    assert json.loads(meta["tokenizer"]) == SPEC
    assert meta["step"] == "42" and meta["checksum"].startswith("sha256:")
    assert all(isinstance(v, str) for v in meta.values())
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert "token_embedding.weight" in tensors and tensors["token_embedding.weight"]["shape"] == [CONFIG.vocab_size, 32]
    assert not any("lm_head" in k for k in tensors)  # tied: stored once
    assert path.read_bytes()[:2] != b"\x80\x02" and b"PK\x03\x04" not in path.read_bytes()[:data_start]  # not pickle/zip
    assert data_start + sum(t["data_offsets"][1] - t["data_offsets"][0] for t in tensors.values()) == path.stat().st_size


def test_checksum_covers_names_shapes_and_values():
    a = {"w": torch.zeros(2, 3)}
    assert weights_checksum(a) == weights_checksum({"w": torch.zeros(2, 3)})
    assert weights_checksum(a) != weights_checksum({"w": torch.zeros(3, 2)})
    assert weights_checksum(a) != weights_checksum({"v": torch.zeros(2, 3)})
    assert weights_checksum(a) != weights_checksum({"w": torch.zeros(2, 3, dtype=torch.float64)})
    b = torch.zeros(2, 3)
    b[1, 2] = 1e-30
    assert weights_checksum(a) != weights_checksum({"w": b})


def save_good_best(path):
    """A good best.safetensors (step 40) next to `path`: the fallback a damaged file's error names."""
    best = path.parent / "best.safetensors"
    save_checkpoint(best, tiny_model(seed=1), SPEC, step=40, val_loss=2.8)
    return best


def test_corrupted_weights_fail_the_checksum(saved):
    path, _ = saved
    best = save_good_best(path)
    raw = bytearray(path.read_bytes())
    _, data_start = header_of(path)
    raw[data_start + 100] ^= 0x01  # flip one bit of one weight
    path.write_bytes(bytes(raw))
    with pytest.raises(GptkitError) as info:
        load_run_checkpoint(path)
    assert info.value.message == f"{path} is corrupted: its weights do not match the checksum stored with them"
    assert info.value.hint == f"the last good checkpoint is {best} (step 40); use it instead, or train again"


@pytest.mark.parametrize("keep", [0.5, 0.999, 10 / 100_000])
def test_truncated_file(saved, keep):
    path, _ = saved
    best = save_good_best(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: max(int(len(raw) * keep), 4)])
    with pytest.raises(GptkitError) as info:
        load_run_checkpoint(path)
    assert info.value.message.startswith(f"{path} is not a readable safetensors file (truncated or damaged: ")
    assert info.value.hint == f"the last good checkpoint is {best} (step 40); use it instead, or train again"


def test_empty_and_text_files(tmp_path):
    for name, content in (("empty.safetensors", b""), ("notes.safetensors", b"hello, this is not a checkpoint\n" * 3)):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(GptkitError, match="is not a readable safetensors file"):
            load_checkpoint(path)


def test_non_gptkit_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"wte": torch.zeros(4, 4)}, str(path))
    with pytest.raises(GptkitError, match="is a safetensors file but not a gptkit.checkpoint file \\(format None\\)") as info:
        load_checkpoint(path)
    assert "gptkit train" in info.value.hint


def test_newer_format_version(saved, tmp_path):
    path, _ = saved
    newer = rewrite(path, tmp_path / "newer.safetensors", format_version="2")
    with pytest.raises(GptkitError, match="has format version 2, newer than this gptkit") as info:
        load_checkpoint(newer)
    assert "upgrade" in info.value.hint
    garbage = rewrite(path, tmp_path / "garbage.safetensors", format_version="one")
    with pytest.raises(GptkitError, match="format version one"):
        load_checkpoint(garbage)


@pytest.mark.parametrize(
    "changes",
    [dict(model_config="{not json"), dict(model_config='{"n_layers": 2}'), dict(step=None), dict(step="many"), dict(tokenizer=None)],
)
def test_damaged_metadata(saved, tmp_path, changes):
    path, _ = saved
    damaged = rewrite(path, tmp_path / "damaged.safetensors", **changes)
    with pytest.raises(GptkitError, match="has damaged metadata"):
        load_checkpoint(damaged)


def test_weights_that_do_not_fit_the_config(saved, tmp_path):
    path, _ = saved
    wrong = rewrite(path, tmp_path / "wrong.safetensors", model_config=json.dumps({**CONFIG.to_dict(), "n_layer": 3}))
    ckpt = load_checkpoint(wrong)  # the weights are intact...
    with pytest.raises(GptkitError, match="checkpoint weights do not fit its model config"):
        ckpt.build_model()  # ...but describe another model


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(GptkitError, match="checkpoint .*nope.safetensors does not exist") as info:
        load_checkpoint(tmp_path / "nope.safetensors")
    assert "gptkit train" in info.value.hint
    with pytest.raises(GptkitError, match="is a folder") as info:
        load_checkpoint(tmp_path)
    assert info.value.hint == f"pass the file, e.g. {tmp_path / 'ckpt.safetensors'}"


def test_save_is_atomic_and_overwrites(saved):
    path, _ = saved
    save_checkpoint(path, tiny_model(seed=1), SPEC, step=43)
    assert load_checkpoint(path).step == 43
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


# --- resume state -------------------------------------------------------------------------------------


def trained_optimizer(model, steps=3):
    from gptkit.config import TrainConfig
    from gptkit.train import make_optimizer

    optimizer = make_optimizer(model, TrainConfig(learning_rate=1e-2), torch.device("cpu"))
    for _ in range(steps):
        idx = torch.randint(CONFIG.vocab_size, (2, 16))
        _, loss = model(idx, idx)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def test_resume_state_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny_model()
    optimizer = trained_optimizer(model)
    rng = {"torch": torch.get_rng_state(), "batches": torch.Generator().manual_seed(5).get_state()}
    extra = {"best_val_loss": 1.25, "grad_scaler": None}
    path = tmp_path / "resume.safetensors"
    save_resume_state(path, optimizer, 3, rng, extra)

    state, step, rng_back, extra_back = load_resume_state(path)
    assert step == 3 and extra_back == extra
    assert set(rng_back) == {"torch", "batches"}
    assert all(torch.equal(rng_back[k], rng[k]) for k in rng)

    original = optimizer.state_dict()
    assert state["param_groups"] == original["param_groups"]
    assert set(state["state"]) == set(original["state"])
    for pid, moments in original["state"].items():
        assert set(state["state"][pid]) == set(moments)
        for key, value in moments.items():
            assert torch.equal(state["state"][pid][key], value), (pid, key)

    # A fresh optimizer loaded from the file continues exactly like the original.
    twin = GPT(CONFIG)
    twin.load_state_dict(model.state_dict())
    from gptkit.config import TrainConfig
    from gptkit.train import make_optimizer

    twin_optimizer = make_optimizer(twin, TrainConfig(learning_rate=1e-2), torch.device("cpu"))
    twin_optimizer.load_state_dict(state)
    idx = torch.randint(CONFIG.vocab_size, (2, 16))
    for m, opt in ((model, optimizer), (twin, twin_optimizer)):
        _, loss = m(idx, idx)
        loss.backward()
        opt.step()
    for (name, a), (_, b) in zip(model.named_parameters(), twin.named_parameters()):
        assert torch.equal(a, b), name


def test_resume_file_is_not_a_checkpoint_and_vice_versa(tmp_path, saved):
    ckpt_path, model = saved
    resume = tmp_path / "resume.safetensors"
    save_resume_state(resume, trained_optimizer(model, 1), 1, {"torch": torch.get_rng_state()}, {})
    with pytest.raises(GptkitError, match="not a gptkit.checkpoint file \\(format 'gptkit.resume'\\)"):
        load_checkpoint(resume)
    with pytest.raises(GptkitError, match="not a gptkit.resume file"):
        load_resume_state(ckpt_path)
    with pytest.raises(GptkitError, match="resume state .* does not exist"):
        load_resume_state(tmp_path / "missing.safetensors")


def test_round_trip_of_a_rope_untied_model(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(**{**CONFIG.to_dict(), "position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "tie_embeddings": False})
    model = GPT(config).eval()
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, SPEC, step=1)
    ckpt = load_checkpoint(path)
    assert ckpt.model_config == config
    idx = torch.randint(CONFIG.vocab_size, (1, 16))
    with torch.no_grad():
        assert torch.equal(ckpt.build_model().eval()(idx)[0], model(idx)[0])


# --- vocabulary padding -------------------------------------------------------------------------------


def test_round_trip_of_a_padded_model(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(**{**CONFIG.to_dict(), "vocab_multiple": 64})
    model = GPT(config).eval()
    path = tmp_path / "padded.safetensors"
    save_checkpoint(path, model, SPEC, step=1)
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["model_config"])["vocab_multiple"] == 64
    ckpt = load_checkpoint(path)
    assert ckpt.model_config == config and ckpt.model_config.vocab_size == CONFIG.vocab_size
    rebuilt = ckpt.build_model().eval()
    assert rebuilt.token_embedding.weight.shape == (64, 32)  # 30 ids padded to 64
    idx = torch.randint(CONFIG.vocab_size, (1, 16))
    with torch.no_grad():
        assert torch.equal(rebuilt(idx)[0], model(idx)[0])


def test_checkpoint_from_before_vocab_multiple_loads_unpadded(saved, tmp_path):
    path, model = saved
    old_config = {k: v for k, v in CONFIG.to_dict().items() if k != "vocab_multiple"}
    old = rewrite(path, tmp_path / "old.safetensors", model_config=json.dumps(old_config))
    ckpt = load_checkpoint(old)
    assert ckpt.model_config.vocab_multiple == 1 and ckpt.model_config == CONFIG
    rebuilt = ckpt.build_model()
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))


def test_padding_that_does_not_fit_the_weights(saved, tmp_path):
    path, _ = saved  # unpadded: 30 rows
    wrong = rewrite(path, tmp_path / "wrong.safetensors", model_config=json.dumps({**CONFIG.to_dict(), "vocab_multiple": 64}))
    with pytest.raises(GptkitError, match="token_embedding.weight has 30 rows, but vocab_size 30 padded to a multiple of vocab_multiple 64 needs 64") as info:
        load_checkpoint(wrong).build_model()
    assert "checkpoint weights do not fit its model config" in info.value.message
    invalid = rewrite(path, tmp_path / "invalid.safetensors", model_config=json.dumps({**CONFIG.to_dict(), "vocab_multiple": 0}))
    with pytest.raises(GptkitError, match=r"has damaged metadata .*model.vocab_multiple must be at least 1 \(got 0\)"):
        load_checkpoint(invalid)


# --- kinds: full models and adapters ------------------------------------------------------------------


def test_new_checkpoints_are_models_with_their_checksum(saved, tmp_path):
    path, _ = saved
    header, _ = header_of(path)
    assert header["__metadata__"]["kind"] == "model" and "base_checksum" not in header["__metadata__"]
    ckpt = load_checkpoint(path)
    assert (ckpt.kind, ckpt.base_checksum) == ("model", None)
    assert ckpt.checksum == header["__metadata__"]["checksum"] == save_checkpoint(tmp_path / "again.safetensors", saved[1], SPEC, step=42)


def test_checkpoint_written_before_kinds_loads_as_a_model(saved, tmp_path):
    path, model = saved
    old = rewrite(path, tmp_path / "old.safetensors", kind=None, base_checksum=None)
    header, _ = header_of(old)
    assert "kind" not in header["__metadata__"] and "base_checksum" not in header["__metadata__"]
    for ckpt in (load_checkpoint(old), peek_checkpoint(old)):
        assert (ckpt.kind, ckpt.base_checksum, ckpt.step) == ("model", None, 42)
    rebuilt = load_checkpoint(old).build_model()
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))


def lora_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"blocks.0.attn.qkv.lora_a": torch.randn(4, 32, generator=g), "blocks.0.attn.qkv.lora_b": torch.zeros(96, 4)}


def test_adapter_round_trip_names_its_base(saved, tmp_path):
    path, _ = saved
    base = load_checkpoint(path)
    adapter_path = tmp_path / "adapter.safetensors"
    checksum = save_adapter(adapter_path, lora_weights(), base, step=7, train_loss=1.5, train_config={"lora_rank": 4})
    header, _ = header_of(adapter_path)
    assert header["__metadata__"]["kind"] == "adapter" and header["__metadata__"]["base_checksum"] == base.checksum
    adapter = load_checkpoint(adapter_path)
    assert (adapter.kind, adapter.base_checksum, adapter.checksum, adapter.step) == ("adapter", base.checksum, checksum, 7)
    assert adapter.model_config == base.model_config and adapter.tokenizer_spec == base.tokenizer_spec
    assert adapter.train_config == {"lora_rank": 4} and adapter.train_loss == 1.5
    assert all(torch.equal(adapter.state_dict[k], v) for k, v in lora_weights().items())
    assert peek_checkpoint(adapter_path).base_checksum == base.checksum
    adapter.check_base(base)  # the model it belongs to: fine
    other = load_checkpoint(rewrite(path, tmp_path / "other.safetensors"))  # same weights, same checksum: fine too
    adapter.check_base(other)
    save_checkpoint(tmp_path / "different.safetensors", tiny_model(seed=5), SPEC, step=1)
    with pytest.raises(GptkitError, match=f"was trained on the base model {base.checksum}, not on this one"):
        adapter.check_base(load_checkpoint(tmp_path / "different.safetensors"))
    with pytest.raises(GptkitError, match="is a full model, not an adapter"):
        base.check_base(base)
    with pytest.raises(GptkitError, match="this checkpoint is an adapter, not a full model") as info:
        adapter.build_model()
    assert "base model" in info.value.hint


def test_an_adapter_needs_a_full_model_as_its_base(saved, tmp_path):
    path, _ = saved
    base = load_checkpoint(path)
    save_adapter(tmp_path / "a.safetensors", lora_weights(), base, step=1)
    with pytest.raises(ValueError, match="base must be a full model"):
        save_adapter(tmp_path / "b.safetensors", lora_weights(), load_checkpoint(tmp_path / "a.safetensors"), step=1)


@pytest.mark.parametrize("changes", [dict(base_checksum=None), dict(base_checksum="12ab"), dict(kind="merged")])
def test_damaged_kind_metadata(saved, tmp_path, changes):
    path, _ = saved
    adapter = tmp_path / "adapter.safetensors"
    save_adapter(adapter, lora_weights(), load_checkpoint(path), step=1)
    damaged = rewrite(adapter, tmp_path / "damaged.safetensors", **changes)
    with pytest.raises(GptkitError, match="has damaged metadata"):
        load_checkpoint(damaged)


# --- the header, without torch ------------------------------------------------------------------------


def test_header_reader_lists_tensors_and_metadata(saved):
    path, model = saved
    header = read_checkpoint_header(path)
    with safe_open(str(path), framework="pt") as f:
        assert header.metadata == f.metadata()
    expected = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied: stored once
    assert set(header.tensors) == set(expected)
    for name, tensor in expected.items():
        assert header.tensors[name] == TensorInfo("F32", tuple(tensor.shape)), name


@pytest.mark.parametrize("keep", [0.5, 0.999, 10 / 100_000])
def test_header_reader_refuses_truncated_files(saved, keep):
    path, _ = saved
    raw = path.read_bytes()
    path.write_bytes(raw[: max(int(len(raw) * keep), 4)])
    with pytest.raises(DamagedFile) as info:
        read_header(path)
    assert info.value.message.startswith(f"{path} is not a readable safetensors file (truncated or damaged: ")
    with pytest.raises(DamagedFile):
        peek_checkpoint(path)


def test_header_reader_refuses_other_files(tmp_path, saved):
    save_file({"wte": torch.zeros(4, 4)}, str(tmp_path / "model.safetensors"))
    assert read_header(tmp_path / "model.safetensors").tensors == {"wte": TensorInfo("F32", (4, 4))}
    with pytest.raises(GptkitError, match="is a safetensors file but not a gptkit.checkpoint file"):
        read_checkpoint_header(tmp_path / "model.safetensors")
    newer = rewrite(saved[0], tmp_path / "newer.safetensors", format_version="2")
    with pytest.raises(GptkitError, match="has format version 2, newer than this gptkit"):
        read_checkpoint_header(newer)
    with pytest.raises(GptkitError, match="checkpoint .* does not exist"):
        read_header(tmp_path / "missing.safetensors")


def test_header_reader_needs_no_torch(saved):
    path, _ = saved
    code = (
        "import sys\n"
        "from gptkit.checkpoint_format import read_checkpoint_header\n"
        "from gptkit.tokenizers.loading import load_tokenizer\n"
        "header = read_checkpoint_header(sys.argv[1])\n"
        "print(header.tensors['token_embedding.weight'].shape, load_tokenizer(sys.argv[1]).vocab_size, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(30,", "32)", str(len(SPEC["chars"]) + 1), "False"]


def test_checkpoint_modules_import_nothing_above_them():
    """checkpoint_format.py needs only errors.py; checkpoint.py only the core (never run_folder.py)."""
    core = {"gptkit", "gptkit.errors", "gptkit.fileio", "gptkit.model", "gptkit.checkpoint_format", "gptkit.tokenizers"}
    for module, allowed in (("checkpoint_format", {"gptkit.errors"}), ("checkpoint", core)):
        tree = ast.parse((Path(gptkit.__file__).parent / f"{module}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert {name for name in imported if name.startswith("gptkit")} <= allowed, module
