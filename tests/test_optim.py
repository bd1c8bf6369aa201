import math

import pytest
import torch

from conftest import TINY_MODEL, tiny_configs
from gptkit.checkpoint import load_checkpoint, load_resume_state, save_resume_state
from gptkit.config import TrainConfig
from gptkit.launch import resume_config
from gptkit.model import GPT, ModelConfig
from gptkit.optim import CombinedOptimizer, Muon, make_optimizer, orthogonalize, set_learning_rate
from gptkit.schedule import learning_rate_at
from gptkit.train import train


def old_cosine(step, cfg):
    """train.py's schedule before schedule.py, kept verbatim as the reference."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if step >= decay_iters:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(decay_iters - cfg.warmup_iters, 1)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


@pytest.mark.parametrize("warmup, decay", [(100, 0), (0, 50), (10, 2000), (3, 3)])
def test_cosine_is_unchanged_bit_for_bit(warmup, decay):
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=warmup, max_iters=2000, lr_decay_iters=decay)
    assert all(learning_rate_at(s, cfg) == old_cosine(s, cfg) for s in range(0, 2100, 7))


def test_linear_constant_and_wsd_shapes():
    base = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    linear = TrainConfig(**base, lr_schedule="linear")
    assert learning_rate_at(10, linear) == pytest.approx(1e-3)
    assert learning_rate_at(60, linear) == pytest.approx(5.5e-4)  # half way, in a straight line
    assert learning_rate_at(110, linear) == pytest.approx(1e-4) == learning_rate_at(500, linear)
    constant = TrainConfig(**base, lr_schedule="constant")
    assert {learning_rate_at(s, constant) for s in range(10, 500)} == {1e-3}
    wsd = TrainConfig(**base, lr_schedule="wsd", cooldown_frac=0.2)  # cooldown: the last 22 of 110 steps
    assert {learning_rate_at(s, wsd) for s in range(10, 89)} == {1e-3}  # stable
    assert learning_rate_at(88, wsd) == 1e-3 > learning_rate_at(89, wsd)
    assert learning_rate_at(99, wsd) == pytest.approx(1e-3 - 11 / 22 * 9e-4)  # half way down
    assert learning_rate_at(110, wsd) == pytest.approx(1e-4)
    for cfg in (linear, constant, wsd):  # every schedule shares the warmup
        assert learning_rate_at(0, cfg) == pytest.approx(1e-3 / 11)


def test_orthogonalize_sets_singular_values_near_one():
    torch.manual_seed(0)
    # a gradient-like matrix: a few directions dominate (singular values spread over 4 decades)
    u, _ = torch.linalg.qr(torch.randn(96, 96))
    v, _ = torch.linalg.qr(torch.randn(32, 32))
    s = torch.logspace(0, -4, 32)
    g = u[:, :32] @ torch.diag(s) @ v.T  # (96, 32): tall
    for matrix in (g, g.T):
        out = orthogonalize(matrix)
        assert out.shape == matrix.shape
        sv = torch.linalg.svdvals(out)
        assert sv.max() < 1.25
        # out = U diag(p(s)) V^T with the input's singular vectors U, V, and p(s) near 1 for every
        # direction down to 1/100 of the largest (16 of them; the input's span 1 .. 0.01)
        ref = torch.linalg.svd(matrix, full_matrices=False)
        inner = ref.U[:, :16].T @ out @ ref.Vh[:16].T
        assert (inner - torch.diag(inner.diag())).abs().max() < 0.02
        assert inner.diag().min() > 0.6 and inner.diag().max() < 1.25


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon arrived in torch 2.9")
def test_muon_agrees_with_torchs_muon():
    """An independent implementation as the reference: the same updates, up to the rounding of
    torch's Newton–Schulz, which runs in bfloat16 (ours in float32 on the CPU)."""
    torch.manual_seed(0)
    start = torch.randn(48, 16)
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    a = Muon([ours], lr=0.02, momentum=0.9, weight_decay=0.1)
    b = torch.optim.Muon([theirs], lr=0.02, momentum=0.9, weight_decay=0.1)
    for _ in range(4):
        grad = torch.randn(48, 16)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    moved_ours, moved_theirs = (ours - start).detach(), (theirs - start).detach()
    assert moved_ours.norm() > 0.1  # it did move: 4 steps of 0.02 * sqrt(3) per entry, roughly
    assert (moved_ours - moved_theirs).norm() < 0.02 * moved_theirs.norm()


def tiny_model(**overrides):
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=30, **{**TINY_MODEL, **overrides}))


@pytest.mark.parametrize("variant", [{}, dict(tie_embeddings=False, position="rope", norm="rmsnorm", mlp="swiglu")])
def test_muon_gets_the_hidden_matrices_and_adamw_the_rest(variant):
    model = tiny_model(**variant)
    cfg = TrainConfig(optimizer="muon", learning_rate=2e-3, muon_lr=0.04, weight_decay=0.25)
    optimizer = make_optimizer(model, cfg, torch.device("cpu"))
    assert isinstance(optimizer, CombinedOptimizer)
    muon, adamw = optimizer.optimizers
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    assert muon_names == {f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")}
    adam_names = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    assert {"token_embedding.weight", "blocks.0.attn.qkv.bias", "final_norm.weight"} <= adam_names
    if variant:  # a separate output layer is not a hidden matrix either
        assert "lm_head.weight" in adam_names
    assert muon_names.isdisjoint(adam_names) and len(muon_names | adam_names) == len(names)
    decay, no_decay = adamw.param_groups
    assert decay["weight_decay"] == 0.25 and all(p.dim() >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() < 2 for p in no_decay["params"])
    # the schedule moves both in proportion
    set_learning_rate(optimizer, 1e-3)
    assert muon.param_groups[0]["lr"] == pytest.approx(0.02) and decay["lr"] == 1e-3


def test_combined_state_dict_round_trips_through_a_resume_file(tmp_path):
    model = tiny_model()
    cfg = TrainConfig(optimizer="muon")
    optimizer = make_optimizer(model, cfg, torch.device("cpu"))
    x = torch.randint(30, (4, 16))
    for _ in range(2):
        _, loss = model(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    save_resume_state(tmp_path / "r.safetensors", optimizer, 2, {"torch": torch.get_rng_state()}, {})
    state, *_ = load_resume_state(tmp_path / "r.safetensors")
    n_params = len(list(model.parameters()))
    assert sorted(state["state"]) == list(range(n_params))  # one numbering over both optimizers
    fresh = make_optimizer(model, cfg, torch.device("cpu"))
    fresh.load_state_dict(state)
    for a, b in zip(optimizer.optimizers, fresh.optimizers):
        for p in (p for g in a.param_groups for p in g["params"]):
            for key, value in a.state[p].items():
                assert torch.equal(value, b.state[p][key])


def test_muon_trains_and_resumes_bitwise(tmp_path, tiny_data):
    straight = tmp_path / "straight"
    result = train(*tiny_configs(tiny_data, straight, max_iters=12, eval_interval=6, optimizer="muon", lr_schedule="wsd"))
    first = load_checkpoint(straight / "ckpt.safetensors")
    assert result.val_loss < 3.2  # from ln(vocab) ~ 3.4 at the start
    split_run = tmp_path / "split"
    train(*tiny_configs(tiny_data, split_run, max_iters=6, lr_decay_iters=12, eval_interval=6, optimizer="muon", lr_schedule="wsd"))
    train(*resume_config(split_run, {"max_iters": 12}), resume=True)
    second = load_checkpoint(split_run / "ckpt.safetensors")
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
