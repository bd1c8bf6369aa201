"""Attention weights as pictures: one PNG per layer, a grid of its heads, tokens on both axes.

    paths = plot_attention(probe, "attention/")   # attention/layer_00.png, layer_01.png, ...

Each panel is one head: row t (the query, the token being predicted from) shows how that position's
attention spreads over the keys 0..t (columns); the upper triangle is empty because of the causal mask.
matplotlib is an optional extra (`pip install 'gptkit[report]'`), as for `gptkit report`.
"""

from __future__ import annotations

import math
from pathlib import Path

from gptkit.errors import GptkitError
from gptkit.fileio import atomic_open

MAX_LABELS = 48  # past this many tokens the axis labels would overlap: every n-th is shown


def _figure_class():
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    except ImportError:
        raise GptkitError(
            "drawing attention maps needs matplotlib, which is not installed",
            hint="pip install 'gptkit[report]' (or pip install matplotlib)",
        ) from None
    return Figure


def _label(token: str) -> str:
    return token.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "\u2423")  # a visible space: ␣


def plot_layer(weights, tokens: list[str], layer: int, png: str | Path) -> Path:
    """weights (n_head, T, T) of one layer -> a PNG with one panel per head."""
    Figure = _figure_class()
    import matplotlib
    import numpy as np

    n_head, T = weights.shape[0], weights.shape[-1]
    cols = math.ceil(math.sqrt(n_head))
    rows = math.ceil(n_head / cols)
    side = max(2.5, min(6.0, 0.18 * T + 1.5))
    figure = Figure(figsize=(cols * side, rows * side + 0.6), dpi=100)
    step = max(1, math.ceil(T / MAX_LABELS))
    ticks = list(range(0, T, step))
    labels = [_label(tokens[i]) for i in ticks]
    fontsize = 8 if len(ticks) <= 24 else 6
    colormap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    for head in range(n_head):
        axes = figure.add_subplot(rows, cols, head + 1)
        grid = weights[head].float().numpy().copy()
        future = np.triu(np.ones_like(grid, dtype=bool), 1) & (grid == 0)
        grid[future] = np.nan  # the keys the causal mask hides: drawn blank, not as "no attention"
        axes.imshow(grid, cmap=colormap, vmin=0.0, vmax=1.0, interpolation="nearest")
        axes.set_title(f"head {head}", fontsize=9)
        axes.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
        axes.set_yticks(ticks, labels, fontsize=fontsize)
        axes.set_xlabel("key (attended to)", fontsize=7)
        axes.set_ylabel("query", fontsize=7)
    figure.suptitle(f"layer {layer}: attention weights (row = query, each sums to 1)", fontsize=10)
    figure.tight_layout()
    png = Path(png)
    with atomic_open(png, "wb") as f:
        figure.savefig(f, format="png")
    return png


def plot_attention(probe, out_dir: str | Path) -> list[Path]:
    """Every layer of an AttentionProbe (probes.py) into OUT_DIR/layer_NN.png."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GptkitError(f"{out_dir} is a file, not a folder", hint="pass a folder for the PNGs with --out")
    _figure_class()  # fail before anything is written
    return [plot_layer(probe.weights[layer], probe.tokens, layer, out_dir / f"layer_{layer:02d}.png")
            for layer in range(probe.weights.shape[0])]
