"""`gptkit ablate`: several values of one setting, each over several seeds, summarised with the seed noise."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_MODEL, TINY_TRAIN
from gptkit.ablate import RunResult, ablate, parse_seeds, parse_vary, summarise, t_critical, typed_values
from gptkit.errors import UsageError

TRAIN = {k: v for k, v in TINY_TRAIN.items() if k != "seed"} | dict(max_iters=6, eval_interval=3, log_interval=1, warmup_iters=1)


def test_two_variants_over_two_seeds(tiny_data, tmp_path):
    pytest.importorskip("matplotlib")
    result = ablate("mlp", ["gelu", "swiglu"], seeds=[0, 1], out=tmp_path / "abl", preset=None,
                    model_overrides=TINY_MODEL, train_overrides={**TRAIN, "data": str(tiny_data)})
    folders = sorted(p.relative_to(tmp_path / "abl").as_posix() for p in (tmp_path / "abl").glob("*/seed*"))
    assert folders == ["mlp=gelu/seed0", "mlp=gelu/seed1", "mlp=swiglu/seed0", "mlp=swiglu/seed1"]
    for run in result.runs:  # each an ordinary run folder, trained with its own seed and the variant's value
        config = (tmp_path / "abl" / f"mlp={run.value}" / f"seed{run.seed}" / "config.toml").read_text()
        assert f'mlp = "{run.value}"' in config and f"seed = {run.seed}\n" in config and "max_iters = 6\n" in config
    gelu, swiglu = result.variants
    assert (gelu.value, swiglu.value, gelu.runs, swiglu.runs) == ("gelu", "swiglu", 2, 2)
    assert gelu.params != swiglu.params  # SwiGLU's 8/3-wide gated MLP vs GELU's 4x
    # the seeds change the run: the std is the spread of two different losses
    losses = [r.val_loss for r in result.runs if r.value == "gelu"]
    assert losses[0] != losses[1] and gelu.val_loss_std > 0
    assert abs(gelu.val_loss_mean - sum(losses) / 2) < 1e-12
    best, other = sorted(result.variants, key=lambda v: v.val_loss_mean)
    diffs = [o.val_loss - b.val_loss for o, b in zip(*([r for r in result.runs if r.value == v.value] for v in (other, best)))]
    assert best.verdict == "best" and abs(other.diff_mean - sum(diffs) / 2) < 1e-12
    assert other.verdict == ("outside the noise" if other.t > t_critical(1) else "inside the noise")
    record = json.loads(result.json_path.read_text())
    assert record["format"] == "gptkit.ablation" and record["setting"] == "mlp" and len(record["runs"]) == 4
    assert "mlp" not in record["base"]["model"] and record["base"]["train"]["max_iters"] == 6
    table = result.markdown_path.read_text()
    assert "| gelu | " in table and "| swiglu | " in table and "±" in table and "paired t-test" in table
    assert result.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_noise_rule():
    """A paired t-test at 95% on the per-seed differences from the best variant (seeds pair the runs)."""

    def runs(value, losses, params=100):
        return [RunResult(value, i, "", loss, loss, 1000.0 + i, 1.0, params) for i, loss in enumerate(losses)]

    # the seeds disagree about the sign: d = +0.05, -0.03, +0.04, t = 0.02 / (0.0436 / sqrt 3) = 0.79 < 4.30
    mixed = summarise(["a", "b"], runs("a", [1.00, 1.05, 0.98]) + runs("b", [1.05, 1.02, 1.02]))
    assert [v.verdict for v in mixed] == ["best", "inside the noise"] and abs(mixed[1].diff_mean - 0.02) < 1e-9
    # every seed shows the gap (d = 0.03, 0.04, 0.035): outside the noise although the intervals overlap
    paired = summarise(["a", "b"], runs("a", [1.00, 1.10, 0.90]) + runs("b", [1.03, 1.14, 0.935]))
    assert [v.verdict for v in paired] == ["best", "outside the noise"] and paired[1].overlaps is True
    assert abs(paired[1].t - 0.035 / (0.005 / 3 ** 0.5)) < 1e-6 and paired[1].t > t_critical(2) == 4.303
    far = summarise(["a", "b"], runs("a", [1.00, 1.01, 0.99]) + runs("b", [1.20, 1.21, 1.19]))
    assert far[1].verdict == "outside the noise" and far[1].overlaps is False and far[0].tokens_per_sec_mean == 1001.0
    one = summarise(["a", "b"], runs("a", [1.0]) + runs("b", [1.1]))
    assert [v.verdict for v in one] == ["best", "noise unknown (one seed)"] and one[0].val_loss_std is None
    assert t_critical(12) == t_critical(10) and t_critical(100) == t_critical(30)  # conservative between rows


def test_settings_and_values_are_checked():
    assert parse_vary("mlp=gelu,swiglu,relu2") == ("mlp", ["gelu", "swiglu", "relu2"])
    assert parse_vary("block-size=64,128") == ("block_size", ["64", "128"])
    assert typed_values("block_size", ["64", "128"]) == ("model", [64, 128])
    assert typed_values("bias", ["true", "false"]) == ("model", [True, False])
    assert typed_values("learning_rate", ["1e-3", "3e-3"]) == ("train", [1e-3, 3e-3])
    assert typed_values("optimizer", ["adamw", "muon"]) == ("train", ["adamw", "muon"])
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("1,7,42") == [1, 7, 42]
    for bad, words in [("mlp", "NAME=VALUE1,VALUE2"), ("mlp=gelu", "two values"), ("mlp=gelu,gelu", "listed twice")]:
        with pytest.raises(UsageError, match=words):
            parse_vary(bad)
    with pytest.raises(UsageError, match="no such setting"):
        typed_values("colour", ["red", "blue"])
    with pytest.raises(UsageError, match="use --seeds"):
        typed_values("seed", ["1", "2"])
    with pytest.raises(UsageError, match="is not a int"):
        typed_values("block_size", ["64", "big"])
    with pytest.raises(UsageError, match="no repeats"):
        parse_seeds("1,1")


def test_a_bad_value_is_refused_before_any_run(tiny_data, tmp_path):
    with pytest.raises(UsageError, match="model.mlp must be one of"):
        ablate("mlp", ["gelu", "tanh"], seeds=[0], out=tmp_path / "abl", preset=None, model_overrides=TINY_MODEL,
               train_overrides={**TRAIN, "data": str(tiny_data)})
    assert not (tmp_path / "abl").exists()


def test_cli_ablate_prints_the_table_and_json(tiny_data, tmp_path, run_cli):
    args = ["ablate", "--vary", "block_size=8,16", "--seeds", "2", "--preset", "shakespeare-char-cpu", "--data", tiny_data,
            "--out", tmp_path / "abl", "--device", "cpu", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
            "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "4", "--log-interval", "1",
            "--warmup-iters", "1", "--no-plot"]
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    assert "| block_size | val loss (mean ± std) |" in result.stdout and "| 8 | " in result.stdout and "| 16 | " in result.stdout
    assert "[4/4] block_size=16 seed 1" in result.stderr
    again = run_cli(*args, "--json")
    assert again.code == 2 and "4 of the ablation's run folders already hold runs" in again.stderr  # not replaced
    assert "--overwrite" in again.stderr
    again = run_cli(*args, "--json", "--reuse")  # the same runs: summarised again, none trained
    assert again.code == 0, again.stderr
    assert again.stderr.count("holds it already") == 4 and json.loads(again.stdout)["variants"][0]["value"] == 8
    longer = list(args)
    longer[longer.index("--max-iters") + 1] = "5"
    changed = run_cli(*longer, "--reuse")  # not the same runs: refused, not mixed in
    assert changed.code == 2 and "already hold runs" in changed.stderr
    again = run_cli(*args, "--json", "--overwrite")
    assert again.code == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["setting"] == "block_size" and [v["value"] for v in summary["variants"]] == [8, 16]
    assert summary["png"] is None and not (tmp_path / "abl" / "loss.png").exists()
    refused = run_cli("ablate", "--vary", "mlp=gelu,swiglu", "--seed", "3", "--data", tiny_data, "--out", tmp_path / "x")
    assert refused.code == 2 and "set by the ablation" in refused.stderr
