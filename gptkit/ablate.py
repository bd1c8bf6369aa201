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
much). Every variant runs with the same seeds, and a seed fixes the batch order, so the runs pair up by
seed, and each variant is compared with the best one (lowest mean) on the per-seed differences
d_s = loss(variant, s) - loss(best, s): a paired t-test at 95%,

    outside the noise   when |mean d| > t(0.975, n - 1) x std(d) / sqrt(n)     (n seeds; t = 4.30 for 3)
    inside the noise    otherwise

Pairing removes what the seeds share (the same batches in the same order), so a gap that every seed
shows is found even when the two variants' spreads overlap. The table also says whether the intervals
mean +- 2 std of the two variants overlap, the cruder unpaired look. With one seed the noise is unknown
and the table says so. Three seeds make a weak test: "inside the noise" means "not shown", not "equal".
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from gptkit.config import DEFAULT_PRESET, ModelConfig, TrainConfig, resolve_config
from gptkit.errors import GptkitError, UsageError
from gptkit.fileio import atomic_open

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NOISE_SIGMAS = 2.0  # the unpaired look: intervals mean +- 2 std that overlap
# Student's t, two-sided 95%, by degrees of freedom (seeds - 1); between rows the smaller df's (larger) value.
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        15: 2.131, 20: 2.086, 30: 2.042}
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
    verdict: str  # "best", "inside the noise", "outside the noise", or "noise unknown (one seed)"
    diff_mean: float | None = None  # mean over the seeds of (this variant's val loss - the best's)
    diff_std: float | None = None
    t: float | None = None  # the paired t statistic, against t_critical(seeds - 1)
    overlaps: bool | None = None  # do the intervals mean +- 2 std of this variant and the best overlap?


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


def t_critical(df: int) -> float:
    """The two-sided 95% critical value of Student's t with df degrees of freedom (T_95; conservative between rows)."""
    return T_95[max(d for d in T_95 if d <= df)]


def overlaps(a: VariantSummary, b: VariantSummary) -> bool:
    """The unpaired look: the intervals mean +- NOISE_SIGMAS std of a and b overlap."""
    return abs(a.val_loss_mean - b.val_loss_mean) <= NOISE_SIGMAS * (a.val_loss_std + b.val_loss_std)


def compare_paired(variant: VariantSummary, best: VariantSummary, runs: list[RunResult]) -> None:
    """Fill variant's diff_mean, diff_std, t and verdict from the per-seed differences with `best`."""
    loss = {(r.value, r.seed): r.val_loss for r in runs if r.val_loss is not None}
    seeds = sorted({s for v, s in loss if v == variant.value} & {s for v, s in loss if v == best.value})
    diffs = [loss[variant.value, s] - loss[best.value, s] for s in seeds]
    variant.diff_mean, variant.diff_std = _mean_std(diffs)
    if len(diffs) < 2:
        variant.verdict = "noise unknown (one seed)"
        return
    error = variant.diff_std / math.sqrt(len(diffs))
    variant.t = math.inf if error == 0 else abs(variant.diff_mean) / error
    variant.verdict = "outside the noise" if variant.t > t_critical(len(diffs) - 1) else "inside the noise"


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
        else:
            compare_paired(v, best, runs)
            if v.val_loss_std is not None and best.val_loss_std is not None:
                v.overlaps = overlaps(v, best)
    return variants


def markdown_table(setting: str, variants: list[VariantSummary], seeds: list[int]) -> str:
    def pm(mean, std, spec):
        if mean is None:
            return "-"
        return format(mean, spec) + ("" if std is None else " ± " + format(std, spec.lstrip("+")))

    header = [setting, "val loss (mean ± std)", "tokens/s (mean ± std)", "parameters", "seeds", "vs best: Δ per seed (mean ± std)",
              "vs best"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for v in variants:
        delta = "-" if v.diff_mean is None else pm(v.diff_mean, v.diff_std, "+.4f")
        verdict = v.verdict
        if v.t is not None:
            verdict += f" (t = {v.t:.1f}, needs > {t_critical(v.runs - 1):.2f})" if math.isfinite(v.t) else " (every seed the same gap)"
        if v.overlaps is not None:
            verdict += "; ± 2 std intervals " + ("overlap" if v.overlaps else "apart")
        row = [str(v.value), pm(v.val_loss_mean, v.val_loss_std, ".4f"), pm(v.tokens_per_sec_mean, v.tokens_per_sec_std, ",.0f"),
               f"{v.params:,}", str(v.runs), delta, verdict]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"{len(seeds)} seeds per variant ({', '.join(map(str, seeds))}); val loss at the last step. Δ: the variant's val "
                 "loss minus the best's, seed by seed; \"outside the noise\": a paired t-test at 95% (gptkit/ablate.py).")
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


def finished_run(out: Path, model: ModelConfig, cfg: TrainConfig) -> bool:
    """Whether `out` holds a run of exactly this config (vocab_size aside: the data sets it) that reached max_iters."""
    from gptkit.checkpoint_format import CKPT_NAME, read_checkpoint_header

    try:
        saved = tomllib.loads((out / "config.toml").read_text(encoding="utf-8"))
        step = int(read_checkpoint_header(out / CKPT_NAME).metadata.get("step", -1))
    except (OSError, ValueError, GptkitError):
        return False
    wanted = {"model": {k: v for k, v in asdict(model).items() if k != "vocab_size"}, "train": asdict(cfg)}
    saved["model"] = {k: v for k, v in saved.get("model", {}).items() if k != "vocab_size"}
    return step == cfg.max_iters and all(saved.get(t) == wanted[t] for t in wanted)


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
    reuse: bool = False,
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
    if reuse and overwrite:
        raise UsageError("--reuse and --overwrite contradict each other", hint="pass one of them")

    def planned(value, seed) -> tuple[Path, ModelConfig, TrainConfig]:
        run_out = out / run_name(setting, value) / f"seed{seed}"
        model, cfg = configs[value]
        return run_out, model, replace(cfg, seed=seed, out=str(run_out))

    if not overwrite:  # refuse before the first run, not after some have been trained
        from gptkit.run_folder import holds_run

        taken = [planned(v, s) for v in values for s in seeds]
        taken = [str(p[0]) for p in taken if holds_run(p[0]) and not (reuse and finished_run(*p))]
        if taken:
            raise UsageError(
                f"{len(taken)} of the ablation's run folders already hold runs ({taken[0]}{', ...' if len(taken) > 1 else ''})",
                hint="pass --reuse to keep the finished runs of the same config, --overwrite to train them again, or choose another --out",
            )
    say = progress or (lambda text: None)
    runs, outs = [], {value: [] for value in values}
    total, done = len(values) * len(seeds), 0
    for seed in seeds:  # seed-major: an interrupted ablation still has every variant at the first seeds
        for value in values:
            run_out, model, cfg = planned(value, seed)
            done += 1
            if reuse and finished_run(run_out, model, cfg):
                say(f"[{done}/{total}] {run_name(setting, value)} seed {seed}: {run_out} holds it already")
            else:
                say(f"[{done}/{total}] {run_name(setting, value)} seed {seed} -> {run_out}")
                train(model, cfg, overwrite=overwrite or reuse, monitor=Monitor())
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
              "noise_rule": "paired t-test at 95% on the per-seed differences from the best variant",
              "variants": [asdict(v) for v in variants], "runs": [asdict(r) for r in runs], "base": base}
    with atomic_open(result.json_path, "w") as f:
        f.write(json.dumps(record, indent=2) + "\n")
    with atomic_open(result.markdown_path, "w") as f:
        f.write(markdown + "\n")
    return result
