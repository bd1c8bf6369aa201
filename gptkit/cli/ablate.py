"""`gptkit ablate`: train one setting at several values over several seeds; print the table (gptkit/ablate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gptkit.cli.app import app
from gptkit.cli.train import PRESET_NAMES
from gptkit.config import DEFAULT_PRESET
from gptkit.console import emit_json as _emit_json, log as _log
from gptkit.options import split_overrides, with_config_options


@app.command(
    epilog="Examples:\n\n"
    "  gptkit ablate --vary mlp=gelu,swiglu --max-iters 300 --out out/ablate-mlp\n\n"
    "  gptkit ablate --vary optimizer=adamw,muon --seeds 3 --out out/ablate-opt\n\n"
    "  gptkit ablate --vary block_size=64,128 --seeds 1,7,42 --max-iters 200 --out out/ablate-ctx",
)
@with_config_options
def ablate(
    vary: str = typer.Option(..., "--vary", help="The setting and its values: NAME=V1,V2[,...] (any config field, e.g. mlp=gelu,swiglu)."),
    seeds: str = typer.Option("3", "--seeds", help="A number of seeds (3: seeds 0, 1, 2) or a list (1,7,42)."),
    preset: Optional[str] = typer.Option(DEFAULT_PRESET, "--preset", "-p", help=f"The base config: {PRESET_NAMES}."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML file with \\[model] and \\[train] tables over the preset."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh in run folders that already hold runs."),
    reuse: bool = typer.Option(
        False, "--reuse", help="Keep the runs that already finished with the same config; train the others (an interrupted "
        "ablation goes on where it stopped, and a finished one is only summarised again).",
    ),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Draw OUT/loss.png (needs matplotlib: pip install 'gptkit\\[report]')."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of the markdown table."),
    **settings,
) -> None:
    """Train several values of one setting, each over several seeds (the runs in OUT/NAME=VALUE/seedN),
    and print mean ± std val loss, tokens/s and parameters per value, saying which differences are
    inside the seed noise. Writes OUT/ablation.json, OUT/ablation.md and OUT/loss.png."""
    from gptkit.ablate import ablate as run_ablation, parse_seeds, parse_vary

    setting, values = parse_vary(vary)
    seed_list = parse_seeds(seeds)
    model_overrides, train_overrides = split_overrides(settings)
    out = train_overrides.pop("out", None) or f"out/ablate-{setting}"
    result = run_ablation(
        setting, values, seed_list, out=out, preset=preset, config_file=config, model_overrides=model_overrides,
        train_overrides=train_overrides, overwrite=overwrite, reuse=reuse, png=plot, progress=_log,
    )
    _log(f"table: {result.markdown_path}, runs: {result.json_path}" + (f", loss curves: {result.png}" if result.png else ""))
    if as_json:
        _emit_json({"setting": result.setting, "seeds": result.seeds, "variants": [vars(v) for v in result.variants],
                    "json": str(result.json_path), "markdown": str(result.markdown_path), "png": str(result.png) if result.png else None})
    else:
        print(result.markdown)
