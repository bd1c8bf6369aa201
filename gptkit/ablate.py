"""`gptkit ablate`: one setting at several values, each trained over several seeds; is the difference real?

    result = ablate("mlp", ["gelu", "swiglu"], seeds=[0, 1, 2], out="out/ablate-mlp",
                    train_overrides={"max_iters": 300})
    print(result.markdown)

Every run is an ordinary `train()` run, in process, into its own run folder; nothing else differs
between the runs of a variant than the seed (weights, batch order, dropout), and between variants than
the one setting:

    OUT/mlp=gelu/seed0/ ... OUT/mlp=swiglu/seed2/   run folders (metrics.jsonl, config.toml, checkpoints)
    OUT/ablation.json                               the settings, every run's numbers, the summary
    OUT/ablation.md                                 the table
    OUT/loss.png                                    each variant's loss curves, averaged over its seeds

The table has, per variant, the final val loss (the evaluation at the last step) as mean +- standard
deviation over the seeds (the sample standard deviation, n - 1), the median tokens/s as mean +- std,
and the parameters.

When is a difference real? Seeds alone move the val loss (the spread of one variant's runs shows by how
much), so each variant is compared with the best one (lowest mean) by a deliberately simple rule:

    inside the noise   when the intervals mean +- 2 std of the two variants overlap
    worse              when they do not (the gap is wider than both spreads together)

With 3 seeds this is a rough, conservative test (a Welch t-test would be sharper, but with 3 runs per
side any test says little); a "worse" verdict means the gap is well outside what the seeds did.
With one seed the noise is unknown and the table says so.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from gptkit.config import DEFAULT_PRESET, ModelConfig, TrainConfig, resolve_config
from gptkit.errors import UsageError
from gptkit.fileio import atomic_open

NOISE_SIGMAS = 2.0  # intervals mean +- 2 std that overlap: inside the seed noise
FIXED = {"seed", "out"}  # set by the ablation itself for every run


@dataclass
class RunResult:
    value: object
    seed: int
    out: str
    val_loss: float | None  # at the last step
    best_val_loss: float | None
    tokens_per_sec: float | None  # median over the progress reports
    wall_s: float | None
    params: int


@dataclass
class VariantSummary:
    value: object
    runs: int
    val_loss_mean: float | None
    val_loss_std: float | None  # None with one seed
    tokens_per_sec_mean: float | None
    tokens_per_sec_std: float | None
    params: int
    verdict: str  # "best", "inside the noise", "worse", or "noise unknown (one seed)"


@dataclass
class AblationResult:
    setting: str
    values: list
    seeds: list[int]
    runs: list[RunResult]
    variants: list[VariantSummary]
    markdown: str
    json_path: Path
    markdown_path: Path
    png: Path | None = None
    base: dict = field(default_factory=dict)  # the settings every run shares (model and train)


def parse_vary(text: str) -> tuple[str, list[str]]:
    """`mlp=gelu,swiglu` -> ("mlp", ["gelu", "swiglu"]); the values stay text until typed by the field."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not name or len(items) < 2:
        raise UsageError(f"--vary {text!r}: expected NAME=VALUE1,VALUE2[,...] (two values at least)", hint="e.g. --vary mlp=gelu,swiglu")
    if len(set(items)) != len(items):
        raise UsageError(f"--vary {text!r}: a value is listed twice")
    return name, items


def parse_seeds(text: str) -> list[int]:
    """`3` -> [0, 1, 2]; `1,7,42` -> those seeds."""
    try:
        seeds = [int(s) for s in text.split(",")] if "," in text else list(range(int(text)))
    except ValueError:
        raise UsageError(f"--seeds {text!r}: a count (3) or a list of seeds (1,7,42)") from None
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise UsageError(f"--seeds {text!r}: one seed at least, no repeats, none negative")
    return seeds


def typed_values(setting: str, values: list) -> tuple[str, list]:
    """("model" | "train", the values as the field's type). Text values become bool, int or float."""
    for table, cls in (("model", ModelConfig), ("train", TrainConfig)):
        by_name = {f.name: f for f in fields(cls)}
        if setting not in by_name:
            continue
        if setting in FIXED:
            raise UsageError(f"--vary {setting}: the ablation sets it for every run", hint="use --seeds to vary the seed")
        default = getattr(cls(), setting)
        return table, [_typed(setting, v, default) for v in values]
    known = sorted({f.name for f in fields(ModelConfig)} | {f.name for f in fields(TrainConfig)} - FIXED)
    raise UsageError(f"--vary {setting}: no such setting", hint=f"settings: {', '.join(known)}")


def _typed(setting: str, value, default):
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false"):
                raise ValueError
            return value.lower() == "true"
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise UsageError(f"--vary {setting}: {value!r} is not a {type(default).__name__}") from None
    return value


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None


def inside_noise(a: VariantSummary, b: VariantSummary) -> bool:
    """The rule of the module docstring: the intervals mean +- NOISE_SIGMAS std overlap."""
    return abs(a.val_loss_mean - b.val_loss_mean) <= NOISE_SIGMAS * (a.val_loss_std + b.val_loss_std)


def summarise(values: list, runs: list[RunResult]) -> list[VariantSummary]:
    variants = []
    for value in values:
        mine = [r for r in runs if r.value == value]
        loss_mean, loss_std = _mean_std([r.val_loss for r in mine if r.val_loss is not None])
        speed_mean, speed_std = _mean_std([r.tokens_per_sec for r in mine if r.tokens_per_sec is not None])
        variants.append(VariantSummary(value, len(mine), loss_mean, loss_std, speed_mean, speed_std, mine[0].params, ""))
    scored = [v for v in variants if v.val_loss_mean is not None]
    if not scored:
        return variants
    best = min(scored, key=lambda v: v.val_loss_mean)
    for v in variants:
        if v.val_loss_mean is None:
            v.verdict = "no val loss"
        elif v is best:
            v.verdict = "best"
        elif v.val_loss_std is None or best.val_loss_std is None:
            v.verdict = "noise unknown (one seed)"
        else:
            v.verdict = "inside the noise" if inside_noise(v, best) else "worse"
    return variants


def markdown_table(setting: str, variants: list[VariantSummary], seeds: list[int]) -> str:
    def pm(mean, std, spec):
        if mean is None:
            return "-"
        return format(mean, spec) + ("" if std is None else " ± " + format(std, spec))

    header = [setting, "val loss (mean ± std)", "tokens/s (mean ± std)", "parameters", "seeds", "vs best"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for v in variants:
        row = [str(v.value), pm(v.val_loss_mean, v.val_loss_std, ".4f"), pm(v.tokens_per_sec_mean, v.tokens_per_sec_std, ",.0f"),
               f"{v.params:,}", str(v.runs), v.verdict]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"{len(seeds)} seeds per variant ({', '.join(map(str, seeds))}); val loss at the last step. \"inside the noise\": "
                 f"the intervals mean ± {NOISE_SIGMAS:g} std of that variant and the best one overlap.")
    return "\n".join(lines)


def run_name(setting: str, value) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"{setting}={text}".replace("/", "_")


def _run_result(value, seed: int, out: Path) -> RunResult:
    from gptkit.checkpoint_format import CKPT_NAME, read_checkpoint_header
    from gptkit.report import load_run

    summary = load_run(out)
    header = read_checkpoint_header(out / CKPT_NAME)
    params = sum(math.prod(t.shape) for t in header.tensors.values())
    val = summary.val_losses[-1] if summary.val_losses else None
    return RunResult(value, seed, str(out), val, summary.best_val_loss, summary.tokens_per_sec, summary.wall_s, params)


def plot_variants(setting: str, values: list, outs: dict, png: Path) -> Path:
    """report.plot_loss_curves over one curve per variant: its seeds' losses averaged step by step."""
    from gptkit.report import RunSummary, load_run, plot_loss_curves

    curves = []
    for value in values:
        runs = [load_run(out) for out in outs[value]]
        mean = RunSummary(name=f"{run_name(setting, value)} (mean of {len(runs)})", path="")
        if all(r.steps == runs[0].steps for r in runs):
            mean.steps, mean.losses = runs[0].steps, [statistics.fmean(xs) for xs in zip(*(r.losses for r in runs))]
        if all(r.eval_steps == runs[0].eval_steps for r in runs):
            mean.eval_steps = runs[0].eval_steps
            mean.val_losses = [statistics.fmean(xs) for xs in zip(*(r.val_losses for r in runs))]
        curves.append(mean)
    return plot_loss_curves(curves, png)


def ablate(
    setting: str,
    values: list,
    seeds: list[int] = (0, 1, 2),
    *,
    out: str | Path = "out/ablate",
    preset: str | None = DEFAULT_PRESET,
    config_file: str | Path | None = None,
    model_overrides: dict | None = None,
    train_overrides: dict | None = None,
    overwrite: bool = False,
    png: bool = True,
    progress: Callable[[str], None] | None = None,
) -> AblationResult:
    """Train every (value, seed) pair of `setting` (a ModelConfig or TrainConfig field) from the same base
    config (preset < config file < overrides), one run folder each under `out`, and summarise (module docstring)."""
    from gptkit.monitor import Monitor
    from gptkit.train import train

    table, values = typed_values(setting, list(values))
    seeds = list(seeds)
    out = Path(out)
    model_overrides, train_overrides = dict(model_overrides or {}), dict(train_overrides or {})
    for name in (setting, *FIXED):
        if name in model_overrides or name in train_overrides:
            raise UsageError(f"{name} is set by the ablation for each run; do not give it as a setting too")
    configs = {}  # check every variant's config before the first run starts
    for value in values:
        overrides = {"model": dict(model_overrides), "train": dict(train_overrides)}
        overrides[table][setting] = value
        configs[value] = resolve_config(preset, config_file, overrides["model"], overrides["train"])
    say = progress or (lambda text: None)
    runs, outs = [], {value: [] for value in values}
    total, done = len(values) * len(seeds), 0
    for seed in seeds:  # seed-major: an interrupted ablation still has every variant at the first seeds
        for value in values:
            model, cfg = configs[value]
            run_out = out / run_name(setting, value) / f"seed{seed}"
            cfg = replace(cfg, seed=seed, out=str(run_out))
            done += 1
            say(f"[{done}/{total}] {run_name(setting, value)} seed {seed} -> {run_out}")
            train(model, cfg, overwrite=overwrite, monitor=Monitor())
            runs.append(_run_result(value, seed, run_out))
            outs[value].append(run_out)
            say(f"  val loss {runs[-1].val_loss:.4f}" if runs[-1].val_loss is not None else "  no val loss")
    variants = summarise(values, runs)
    markdown = markdown_table(setting, variants, seeds)
    base_model, base_train = configs[values[0]]
    base = {"model": {k: v for k, v in asdict(base_model).items() if k != setting},
            "train": {k: v for k, v in asdict(base_train).items() if k not in (setting, *FIXED)}}
    result = AblationResult(setting, values, seeds, runs, variants, markdown, out / "ablation.json", out / "ablation.md", base=base)
    if png:
        result.png = plot_variants(setting, values, outs, out / "loss.png")
    record = {"format": "gptkit.ablation", "setting": setting, "values": values, "seeds": seeds, "preset": preset,
              "noise_rule": f"inside the noise when mean ± {NOISE_SIGMAS:g} std intervals overlap with the best variant's",
              "variants": [asdict(v) for v in variants], "runs": [asdict(r) for r in runs], "base": base}
    with atomic_open(result.json_path, "w") as f:
        f.write(json.dumps(record, indent=2) + "\n")
    with atomic_open(result.markdown_path, "w") as f:
        f.write(markdown + "\n")
    return result
