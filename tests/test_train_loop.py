"""The training loop's parts: train_step's loss over masked targets, estimate_loss on any batches,
TrainState round trips, and train()'s start from a checkpoint's weights with model transforms."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_MODEL, tiny_configs
from gptkit.checkpoint import load_checkpoint
from gptkit.config import TrainConfig
from gptkit.devices import Runtime
from gptkit.distributed import Distributed
from gptkit.loss_guard import LossGuard
from gptkit.model import GPT, ModelConfig
from gptkit.train import train
from gptkit.train_state import TrainState, from_resume_files, to_resume_files
from gptkit.train_step import IGNORE_INDEX, ParallelModel, estimate_loss, train_step

VOCAB, B, T = 20, 3, 16


class FixedBatches:
    """A loader that hands out the given (x, y) batches in order."""

    def __init__(self, batches):
        self.batches, self.position = list(batches), 0

    def next_batch(self):
        batch = self.batches[self.position]
        self.position += 1
        return batch

    def state_dict(self):
        return {"epoch": 0, "position": self.position}

    def load_state_dict(self, state):
        self.position = state.get("position", 0)


class RecordingSGD(torch.optim.SGD):
    """SGD that keeps a copy of the gradients it was asked to apply."""

    def step(self, closure=None):
        self.seen = [p.grad.clone() for p in self.param_groups[0]["params"]]
        return super().step(closure)


def tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=VOCAB, **TINY_MODEL))


def one_step(batches, grad_accum):
    """Run train_step on `batches` with a fresh copy of the same model; returns (stats, gradients)."""
    model = tiny_model()
    optimizer = RecordingSGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    state = TrainState(model, optimizer, scaler, LossGuard(spike_factor=0), FixedBatches(batches))
    cfg = TrainConfig(grad_accum=grad_accum, grad_clip=0.0, warmup_iters=0, max_iters=10)
    stats = train_step(state, ParallelModel(model, model, Runtime(torch.device("cpu"), torch.float32), Distributed()), cfg)
    assert stats.skipped is None and state.step == 1
    return stats, optimizer.seen


def reference(batches):
    """Loss and gradients computed directly: summed cross-entropy over every valid target / their count."""
    model = tiny_model()
    total, count = 0.0, 0
    for x, y in batches:
        logits, _ = model(x)
        total = total + F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), reduction="sum", ignore_index=IGNORE_INDEX)
        count += int((y != IGNORE_INDEX).sum())
    loss = total / count
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters()]


def random_batch(seed, masked_fraction=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(VOCAB, (B, T), generator=g)
    y = torch.randint(VOCAB, (B, T), generator=g)
    mask = torch.rand(B, T, generator=g) < masked_fraction
    return x, y, mask


def masked(y, mask):
    return torch.where(mask, torch.full_like(y, IGNORE_INDEX), y)


def assert_close_gradients(a, b):
    assert len(a) == len(b)
    for ga, gb in zip(a, b):
        assert torch.allclose(ga, gb, rtol=1e-5, atol=1e-7), (ga - gb).abs().max()


def test_the_target_of_a_masked_position_changes_neither_loss_nor_gradients():
    x, y, mask = random_batch(1, masked_fraction=0.5)
    other = (y + 1 + torch.randint(VOCAB - 1, y.shape)) % VOCAB  # a different target everywhere
    assert (other != y).all()
    stats_a, grads_a = one_step([(x, masked(y, mask))], grad_accum=1)
    # the same targets where they count; what was under the mask before it was applied differs
    stats_b, grads_b = one_step([(x, masked(torch.where(mask, other, y), mask))], grad_accum=1)
    assert stats_a.loss == stats_b.loss
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    # and both are the loss of the valid targets alone
    loss, grads = reference([(x, masked(y, mask))])
    assert stats_a.loss == pytest.approx(loss, rel=1e-6)
    assert_close_gradients(grads_a, grads)
    # a target left unmasked does change them
    stats_c, _ = one_step([(x, masked(other, mask))], grad_accum=1)
    assert stats_c.loss != stats_a.loss


def test_micro_batches_weigh_by_valid_targets_not_by_micro_batch():
    x1, y1, _ = random_batch(2)
    x2, y2, _ = random_batch(3)
    few = torch.ones(B, T, dtype=torch.bool)
    few[0, :4] = False  # 4 valid targets in the first micro-batch, 48 in the second
    batches = [(x1, masked(y1, few)), (x2, y2)]
    stats, grads = one_step(batches, grad_accum=2)
    loss, expected = reference(batches)
    assert stats.loss == pytest.approx(loss, rel=1e-6)
    assert_close_gradients(grads, expected)
    # the mean of the two micro-batch means would give the 4 targets as much weight as the 48
    means = [one_step([b], grad_accum=1)[0].loss for b in batches]
    assert abs(stats.loss - sum(means) / 2) > 1e-3
    assert stats.loss == pytest.approx((means[0] * 4 + means[1] * 48) / 52, rel=1e-5)


def test_unmasked_micro_batches_give_the_mean_of_their_means_exactly():
    batches = [random_batch(s)[:2] for s in (4, 5, 6)]
    stats, _ = one_step(batches, grad_accum=3)
    model = tiny_model()
    with torch.no_grad():
        losses = [model(x, y)[1] for x, y in batches]
    expected = torch.zeros(())
    for loss in losses:
        expected += loss / 3
    assert stats.loss == expected.item()  # bitwise: the arithmetic of mean / grad_accum


def test_a_fully_masked_micro_batch_adds_nothing():
    x1, y1, _ = random_batch(7)
    x2, y2, _ = random_batch(8)
    alone, grads_alone = one_step([(x1, y1)], grad_accum=1)
    with_empty, grads = one_step([(x1, y1), (x2, torch.full_like(y2, IGNORE_INDEX))], grad_accum=2)
    assert with_empty.loss == pytest.approx(alone.loss, rel=1e-6)
    assert_close_gradients(grads, grads_alone)


def test_estimate_loss_takes_any_batches_and_weighs_by_token():
    model = tiny_model()
    runner = ParallelModel(model, model, Runtime(torch.device("cpu"), torch.float32), Distributed())
    x1, y1, _ = random_batch(9)
    x2, y2, mask = random_batch(10, masked_fraction=0.7)
    batches = [(x1, y1), (x2, masked(y2, mask))]
    with torch.no_grad():
        total = sum(
            F.cross_entropy(model(x)[0].view(-1, VOCAB), y.reshape(-1), reduction="sum", ignore_index=IGNORE_INDEX).item()
            for x, y in batches
        )
    count = sum(int((y != IGNORE_INDEX).sum()) for _, y in batches)
    assert estimate_loss(runner, batches) == pytest.approx(total / count, rel=1e-6)  # a list
    assert estimate_loss(runner, lambda: iter(batches)) == pytest.approx(total / count, rel=1e-6)  # a callable
    assert model.training  # left in training mode


def test_train_state_round_trips_through_the_resume_file_layout():
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    state = TrainState(model, optimizer, torch.amp.GradScaler("cpu", enabled=False), LossGuard(), FixedBatches([]))
    state.step, state.best_val_loss = 12, 1.5
    state.guard.check(1, 2.0, 1.0)
    saved = state.state_dict()
    weights, optimizer_state, step, rng, extra = to_resume_files(saved)
    assert step == 12 and "torch" in rng and extra["loader"] == {"epoch": 0, "position": 0}
    assert set(extra) == {"best_val_loss", "grad_scaler", "rng", "loss_guard", "elapsed_s", "loader"}
    json.dumps(extra)  # the JSON part is JSON

    class Checkpoint:  # what from_resume_files reads of a checkpoint
        state_dict = weights

    back = from_resume_files(Checkpoint, (optimizer_state, step, rng, extra))
    fresh = TrainState(tiny_model(), torch.optim.AdamW(model.parameters()), torch.amp.GradScaler("cpu", enabled=False), LossGuard(), FixedBatches([]))
    fresh.load_state_dict(back)
    assert (fresh.step, fresh.best_val_loss, fresh.guard.state()) == (12, 1.5, state.guard.state())
    assert fresh.elapsed_s >= saved["elapsed_s"]


def test_a_run_from_a_checkpoints_weights_starts_at_its_loss(tmp_path, tiny_run):
    ckpt = load_checkpoint(tiny_run.ckpt)
    seen = []

    def freeze_embeddings(model):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})  # the weights the transform gets
        model.token_embedding.weight.requires_grad_(False)
        return model

    out = tmp_path / "finetuned"
    model_config, cfg = tiny_configs(tiny_run.data, out, max_iters=4, eval_interval=4, log_interval=1, learning_rate=1e-4)
    result = train(model_config, cfg, init_from=tiny_run.ckpt, transforms=[freeze_embeddings])
    assert result.step == 4
    # the transform ran on the checkpoint's weights, before training
    assert all(torch.equal(seen[0][k], ckpt.state_dict[k]) for k in ckpt.state_dict)
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1 and first["loss"] == pytest.approx(ckpt.train_loss, abs=0.15)
    # a run from scratch starts far higher
    scratch = tmp_path / "scratch"
    train(*tiny_configs(tiny_run.data, scratch, max_iters=1, eval_interval=1, log_interval=1))
    assert json.loads((scratch / "metrics.jsonl").read_text().splitlines()[0])["loss"] > ckpt.train_loss + 0.5
    after = load_checkpoint(out / "ckpt.safetensors")
    assert torch.equal(after.state_dict["token_embedding.weight"], ckpt.state_dict["token_embedding.weight"])  # frozen
    assert not torch.equal(after.state_dict["blocks.0.attn.qkv.weight"], ckpt.state_dict["blocks.0.attn.qkv.weight"])
    assert after.step == 4 and after.model_config == ckpt.model_config


def test_init_from_a_checkpoint_of_other_data_is_refused(tmp_path, tiny_run):
    from gptkit.errors import GptkitError
    from gptkit.prepare import prepare_text

    (tmp_path / "other.txt").write_text("SHOUTED TEXT ONLY, NOTHING ELSE HERE. " * 200)
    prepare_text([tmp_path / "other.txt"], tmp_path / "other")
    with pytest.raises(GptkitError, match="was tokenized differently"):
        train(*tiny_configs(tmp_path / "other", tmp_path / "run", max_iters=2), init_from=tiny_run.ckpt)
    assert not (tmp_path / "run").exists()
