import json
import math
import shutil
import sys

import pytest
import torch

from conftest import TINY_MODEL, make_corpus, tiny_configs
from gptkit.checkpoint import load_checkpoint, load_resume_state, weights_checksum
from gptkit.config import TrainConfig, resolve_config
from gptkit.errors import GptkitError
from gptkit.launch import resume_config
from gptkit.loss_guard import BadLoss
from gptkit.model import GPT, ModelConfig
from gptkit.monitor import Monitor
from gptkit.prepare import prepare_text
from gptkit.run_folder import saved_steps, step_paths
from gptkit.shards import read_meta
from gptkit.train import learning_rate_at, make_optimizer, train

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def deterministic_records(out):
    """metrics.jsonl without the measurements of time and memory."""
    drop = {"time", "tokens_per_sec", "ms_per_iter", "elapsed_s", "mfu", "peak_memory_mb"}
    return [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(out)]


def newest_resume_state(out):
    return load_resume_state(saved_steps(out)[0].state)


# --- learning rate and optimizer ----------------------------------------------------------------------


def test_learning_rate_schedule():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110, lr_decay_iters=0)
    # linear warmup, never exactly 0
    assert learning_rate_at(0, cfg) == pytest.approx(1e-3 / 11)
    assert learning_rate_at(4, cfg) == pytest.approx(1e-3 * 5 / 11)
    assert learning_rate_at(9, cfg) == pytest.approx(1e-3 * 10 / 11)
    # peak right after warmup, cosine to min_lr at lr_decay_iters (here max_iters)
    assert learning_rate_at(10, cfg) == pytest.approx(1e-3)
    assert learning_rate_at(60, cfg) == pytest.approx((1e-3 + 1e-4) / 2)  # half way: cos = 0
    assert learning_rate_at(110, cfg) == pytest.approx(1e-4)
    assert learning_rate_at(500, cfg) == 1e-4
    lrs = [learning_rate_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    warm = [learning_rate_at(s, cfg) for s in range(0, 11)]
    assert all(a < b for a, b in zip(warm, warm[1:]))


def test_learning_rate_decay_length_and_no_warmup():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=0.0, warmup_iters=0, max_iters=100, lr_decay_iters=50)
    assert learning_rate_at(0, cfg) == pytest.approx(1e-3)
    assert learning_rate_at(25, cfg) == pytest.approx(5e-4)
    assert learning_rate_at(50, cfg) == 0.0 and learning_rate_at(99, cfg) == 0.0


def test_weight_decay_only_on_matrices():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=30, **TINY_MODEL))
    optimizer = make_optimizer(model, TrainConfig(weight_decay=0.25, learning_rate=2e-3, beta1=0.8, beta2=0.95), torch.device("cpu"))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.25 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert {"token_embedding.weight", "position_embedding.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.proj.weight"} <= decayed
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert {"blocks.0.attn.qkv.bias", "blocks.0.attn_norm.weight", "final_norm.bias"} <= not_decayed
    # every parameter exactly once
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters())) == len(names)
    assert decay["betas"] == (0.8, 0.95) and decay["lr"] == 2e-3


# --- a tiny run -----------------------------------------------------------------------------------------


def test_tiny_run_learns(tiny_run):
    meta = read_meta(tiny_run.data)
    records = read_metrics(tiny_run.out)
    losses = [r["loss"] for r in records if "loss" in r]
    assert [r["step"] for r in records if "loss" in r] == [5, 10, 15, 20, 25, 30]
    assert losses[0] > losses[-1] + 0.4  # it learns something in 30 steps
    assert losses[0] < math.log(meta["vocab_size"]) + 0.1
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [15, 30]
    assert evals[1]["val_loss"] < evals[0]["val_loss"]
    assert tiny_run.result.step == 30 and tiny_run.result.val_loss == evals[1]["val_loss"]
    assert tiny_run.result.best_val_loss == evals[1]["val_loss"]
    assert all(math.isfinite(r["lr"]) and "time" in r for r in records if "loss" in r)


def test_tiny_run_writes_its_artifacts(tiny_run):
    out = tiny_run.out
    assert sorted(p.name for p in out.iterdir()) == [
        "best.safetensors", "checkpoints", "ckpt.safetensors", "config.toml", "metrics.jsonl",
    ]
    # both evaluations' steps are kept (keep_checkpoints defaults to 3), each a checkpoint and its resume state
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_000015.resume.safetensors", "step_000015.safetensors",
        "step_000030.resume.safetensors", "step_000030.safetensors",
    ]
    # ckpt and best are links to the newest step (the last eval was the best), not copies
    assert (out / "ckpt.safetensors").samefile(step_paths(out, 30).checkpoint)
    assert (out / "best.safetensors").samefile(step_paths(out, 30).checkpoint)
    meta = read_meta(tiny_run.data)
    ckpt = load_checkpoint(out / "ckpt.safetensors")
    assert ckpt.step == 30 and ckpt.tokenizer_spec == meta["tokenizer"]
    assert ckpt.model_config == ModelConfig(vocab_size=meta["vocab_size"], **TINY_MODEL)
    assert ckpt.val_loss == tiny_run.result.val_loss and ckpt.train_loss == tiny_run.result.train_loss
    assert ckpt.train_config["data"] == str(tiny_run.data) and ckpt.train_config["max_iters"] == 30
    best = load_checkpoint(out / "best.safetensors")
    assert best.step == 30 and best.val_loss == ckpt.val_loss  # the last eval was the best
    _, step, rng, extra = load_resume_state(step_paths(out, 30).state)
    assert step == 30 and extra["best_val_loss"] == ckpt.val_loss and {"torch", "batches"} <= set(rng)
    assert extra["checkpoint_checksum"] == "sha256:" + weights_checksum(ckpt.state_dict)  # the state of this checkpoint
    # config.toml is the resolved config, and resolves back to it
    saved = tomllib.loads((out / "config.toml").read_text())
    assert saved["model"]["vocab_size"] == meta["vocab_size"] and saved["train"]["seed"] == 1234
    model_config, train_config = resolve_config(None, out / "config.toml")
    assert model_config == ckpt.model_config and train_config.max_iters == 30


def run_pair_in_one_go_and_resumed(tmp_path, data, total, half, model=None, **overrides):
    settings = dict(max_iters=total, lr_decay_iters=total, eval_interval=half // 2, log_interval=half // 2, **overrides)
    one_go = tmp_path / "one_go"
    train(*tiny_configs(data, one_go, model, **settings))

    resumed = tmp_path / "resumed"
    train(*tiny_configs(data, resumed, model, **{**settings, "max_iters": half}))
    assert load_checkpoint(resumed / "ckpt.safetensors").step == half
    model_config, cfg = resume_config(resumed, {"max_iters": total})
    assert cfg.max_iters == total and cfg.lr_decay_iters == total and model_config.n_layer == TINY_MODEL["n_layer"]
    result = train(model_config, cfg, resume=True)
    assert result.step == total
    return one_go, resumed


def test_resume_is_exact(tmp_path, tiny_data):
    """N steps in one go == N/2 steps, then --resume to N: same weights, same losses, bit for bit.

    Dropout is on, so the global RNG must be restored too, not only the batch sampler's.
    """
    one_go, resumed = run_pair_in_one_go_and_resumed(tmp_path, tiny_data, total=16, half=8, model={"dropout": 0.1}, grad_accum=2)
    a, b = load_checkpoint(one_go / "ckpt.safetensors"), load_checkpoint(resumed / "ckpt.safetensors")
    assert a.step == b.step == 16
    for name in a.state_dict:
        assert torch.equal(a.state_dict[name], b.state_dict[name]), name
    assert (a.train_loss, a.val_loss) == (b.train_loss, b.val_loss)
    # the same records, but for the one that marks where the run was resumed
    records = deterministic_records(resumed)
    assert records.pop(4) == {"step": 8, "event": "resumed"}
    assert deterministic_records(one_go) == records
    assert [r["step"] for r in read_metrics(resumed)] == [4, 4, 8, 8, 8, 12, 12, 16, 16]
    state_a, _, _, extra_a = newest_resume_state(one_go)
    state_b, _, _, extra_b = newest_resume_state(resumed)
    extra_a.pop("elapsed_s"), extra_b.pop("elapsed_s")  # training time, measured
    assert extra_a == extra_b
    for pid in state_a["state"]:
        for key in state_a["state"][pid]:
            assert torch.equal(state_a["state"][pid][key], state_b["state"][pid][key])


def test_resume_drops_metrics_after_the_checkpoint(tmp_path, tiny_run):
    out = tmp_path / "run"
    shutil.copytree(tiny_run.out, out)
    with open(out / "metrics.jsonl", "a") as f:  # records of steps the checkpoint doesn't have
        f.write(json.dumps({"step": 31, "loss": 9.0}) + "\n" + json.dumps({"step": 35, "loss": 9.0}) + "\n")
    model_config, cfg = resume_config(out, {"max_iters": 35, "out": str(out)})
    train(model_config, cfg, resume=True)
    records = read_metrics(out)
    assert [r["step"] for r in records if "loss" in r][-2:] == [30, 35]
    assert 9.0 not in [r.get("loss") for r in records]
    assert load_checkpoint(out / "ckpt.safetensors").step == 35


def test_resume_when_already_done(tmp_path, tiny_run):
    out = tmp_path / "run"
    shutil.copytree(tiny_run.out, out)
    before = (out / "ckpt.safetensors").read_bytes()
    messages = []

    class Recorder(Monitor):
        def message(self, text):
            messages.append(text)

    model_config, cfg = resume_config(out, {"out": str(out)})
    result = train(model_config, cfg, resume=True, monitor=Recorder())
    assert result.step == 30 and result.val_loss == tiny_run.result.val_loss
    assert any("already at step 30" in m and "nothing to do" in m for m in messages)
    assert (out / "ckpt.safetensors").read_bytes() == before


def test_refuses_to_overwrite_a_run(tmp_path, tiny_run):
    out = tmp_path / "run"
    shutil.copytree(tiny_run.out, out)
    before = (out / "ckpt.safetensors").read_bytes()
    with pytest.raises(GptkitError, match="already holds a training run") as info:
        train(*tiny_configs(tiny_run.data, out, max_iters=5))
    assert "--resume" in info.value.hint and "--overwrite" in info.value.hint
    assert (out / "ckpt.safetensors").read_bytes() == before
    train(*tiny_configs(tiny_run.data, out, max_iters=5, eval_interval=5), overwrite=True)
    assert load_checkpoint(out / "ckpt.safetensors").step == 5
    assert max(r["step"] for r in read_metrics(out)) == 5  # a fresh metrics.jsonl


def test_resume_with_nothing_to_resume(tmp_path, tiny_data):
    empty = tmp_path / "empty"
    with pytest.raises(GptkitError) as info:
        train(*tiny_configs(tiny_data, empty), resume=True)
    assert info.value.message == f"cannot resume: {empty} holds no saved training state (checkpoints/step_*.safetensors)"
    assert "without --resume" in info.value.hint
    assert not empty.exists()


def test_resume_without_resume_state(tmp_path, tiny_run):
    """Checkpoints without their resume states cannot be resumed (a step with one file of the two is
    what a crash mid-save leaves); the refusal changes nothing."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run.out, out)
    for point in saved_steps(out):
        point.state.unlink()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(GptkitError, match=f"cannot resume: {out} holds no saved training state"):
        train(*tiny_configs(tiny_run.data, out, max_iters=40), resume=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_resume_with_another_tokenizer_is_refused(tmp_path, tiny_run):
    out = tmp_path / "run"
    shutil.copytree(tiny_run.out, out)
    (tmp_path / "other.txt").write_text(make_corpus(5000, seed=1).upper())
    prepare_text([tmp_path / "other.txt"], tmp_path / "other")
    model_config, cfg = resume_config(out, {"max_iters": 40, "out": str(out), "data": str(tmp_path / "other")})
    with pytest.raises(GptkitError) as info:
        train(model_config, cfg, resume=True)
    assert info.value.message.startswith(f"the data in {tmp_path / 'other'} was tokenized differently (char, ")
    assert f"from the model in {step_paths(out, 30).checkpoint} (char, " in info.value.message
    assert "the data folder the model was trained on" in info.value.hint
    assert load_checkpoint(out / "ckpt.safetensors").step == 30
    assert [p.step for p in saved_steps(out)] == [30, 15]


def test_non_finite_loss_stops_without_saving(tmp_path, tiny_data, monkeypatch):
    class Exploding(GPT):
        def forward(self, idx, targets=None, cache=None):
            logits, loss = super().forward(idx, targets, cache)
            return logits, None if loss is None else loss * float("nan")

    import gptkit.train

    monkeypatch.setattr(gptkit.train, "GPT", Exploding)
    out = tmp_path / "run"
    # by default bad steps are skipped, until 10 in a row (before the first evaluation, at step 10) stop the run
    with pytest.raises(BadLoss, match="^stopped at step 10: 10 bad steps in a row \\(the loss is nan\\); the model has diverged") as info:
        train(*tiny_configs(tiny_data, out, max_iters=20, eval_interval=10, log_interval=5))
    assert "--learning-rate" in info.value.hint
    assert not (out / "ckpt.safetensors").exists() and saved_steps(out) == []


def test_block_size_longer_than_the_data(tmp_path):
    (tmp_path / "t.txt").write_text("a short text: its last tenth is shorter than 16 tokens " * 2)
    prepare_text([tmp_path / "t.txt"], tmp_path / "d")
    with pytest.raises(GptkitError, match="the val split has no shard longer than the context \\(16 tokens\\)"):
        train(*tiny_configs(tmp_path / "d", tmp_path / "run"))


def test_missing_data_folder(tmp_path):
    with pytest.raises(GptkitError, match="data folder .*nowhere does not exist"):
        train(*tiny_configs(tmp_path / "nowhere", tmp_path / "run"))


def test_non_finite_loss_never_overwrites_the_last_good_checkpoint(tmp_path, tiny_data, monkeypatch):
    """Evaluations that fall between progress reports must not save a diverged model either."""
    out = tmp_path / "run"
    train(*tiny_configs(tiny_data, out, max_iters=6, eval_interval=3, log_interval=5))
    good = (out / "ckpt.safetensors").read_bytes()

    class Exploding(GPT):
        def forward(self, idx, targets=None, cache=None):
            logits, loss = super().forward(idx, targets, cache)
            return logits, None if loss is None else loss * float("nan")

    import gptkit.train

    monkeypatch.setattr(gptkit.train, "GPT", Exploding)
    model_config, cfg = resume_config(out, {"max_iters": 20})
    # steps 7-9 are skipped (their losses are nan), so the weights stay finite; the evaluation is not
    with pytest.raises(BadLoss, match="^the evaluation loss became nan at step 9; stopped without saving this model") as info:
        train(model_config, cfg, resume=True)
    assert f"the last checkpoint is step 6: `gptkit train --out {out} --resume`" in info.value.hint
    assert (out / "ckpt.safetensors").read_bytes() == good
    assert [p.step for p in saved_steps(out)] == [6, 3]
    assert newest_resume_state(out)[1] == 6
