"""`gptkit report`: loss curves of several runs as a PNG, and a markdown table comparing them."""

from __future__ import annotations

import json
import shutil

import pytest
from robust_fixtures import (  # noqa: F401  (fixtures are used by name)
    baseline,
    records,
    run_cli,
    tiny_configs,
    tiny_data,
    tiny_toml,
    val_curve,
)

from gptkit.report import load_run, markdown_table, report
from gptkit.train import train


@pytest.fixture(scope="module")
def second_run(tiny_data, tiny_toml, tmp_path_factory):
    """A shorter run with another learning rate, to compare with the baseline."""
    out = tmp_path_factory.mktemp("report") / "lr-1e-3"
    train(*tiny_configs(tiny_toml, tiny_data, out, learning_rate=1e-3, max_iters=10))
    return out


def table_rows(markdown: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines()]


def test_the_table_compares_runs_and_shows_only_differing_settings(baseline, second_run):
    result = report([baseline, second_run], png=None)
    header, rule, first, second = table_rows(result.markdown)
    assert header[:6] == ["run", "steps", "best val loss", "last train loss", "tokens/s", "wall time"]
    assert set(header[6:]) == {"max_iters", "learning_rate"}  # everything else is the same
    assert set(rule) == {"---"}
    column = dict(zip(header, first))
    vals = val_curve(baseline)
    best_step = min(vals, key=vals.get)
    assert column["run"] == "run" and column["steps"] == "30"
    assert column["best val loss"] == f"{vals[best_step]:.4f} (step {best_step})"
    assert column["learning_rate"] == "0.003" and dict(zip(header, second))["learning_rate"] == "0.001"
    assert dict(zip(header, second))["steps"] == "10"
    assert result.png is None


def test_a_single_run_has_no_difference_columns(baseline):
    header, _, row = table_rows(report([baseline], png=None).markdown)
    assert len(header) == len(row) == 6


def test_the_summary_reads_a_resumed_run_and_a_line_cut_by_a_crash(baseline, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(baseline, run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 31, "loss": 0.1, "elapsed_s": 9')  # no newline, not JSON: a crash mid-write
    summary = load_run(run)
    last = [r for r in records(baseline) if "elapsed_s" in r][-1]
    assert summary.last_step == 30 and summary.wall_s == last["elapsed_s"]  # training time, not the clock
    assert summary.steps == list(range(1, 31)) and len(summary.val_losses) == 6


def test_runs_with_the_same_folder_name_are_told_apart_by_path(baseline, tmp_path):
    shutil.copytree(baseline, tmp_path / "a" / "run")
    result = report([baseline, tmp_path / "a" / "run"], png=None)
    names = [row[0] for row in table_rows(result.markdown)[2:]]
    assert names == [str(baseline), str(tmp_path / "a" / "run")]


def test_the_png_draws_each_run_in_its_colour(baseline, second_run, tmp_path):
    image = pytest.importorskip("matplotlib.image")
    import numpy as np
    from matplotlib.colors import to_rgb

    png = report([baseline, second_run], png=tmp_path / "curves.png").png
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(png)[..., :3]
    assert pixels.shape[0] >= 400 and pixels.shape[1] >= 800

    def pixels_of(colour: str) -> int:
        return int(np.sum(np.all(np.abs(pixels - np.array(to_rgb(colour))) < 0.05, axis=-1)))

    assert pixels_of("C0") > 100 and pixels_of("C1") > 100  # both runs' curves are on the picture
    assert pixels_of("C2") < 10  # and only those two


def test_cli_prints_the_table_or_json_on_stdout(baseline, second_run, tmp_path, capsys):
    code, stdout, stderr = run_cli(["report", baseline, second_run, "--no-plot"], capsys)
    assert code == 0, stderr
    assert stdout.splitlines()[0].startswith("| run | steps | best val loss |")
    assert markdown_table([load_run(baseline), load_run(second_run)]) + "\n" == stdout

    code, stdout, _ = run_cli(["report", baseline, "--json", "--no-plot"], capsys)
    assert code == 0
    (summary,) = json.loads(stdout)
    assert summary["best_val_loss"] == min(val_curve(baseline).values()) and summary["last_step"] == 30


def test_cli_draws_the_png_where_asked(baseline, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, stdout, stderr = run_cli(["report", baseline, "--png", tmp_path / "loss.png"], capsys)
    assert code == 0 and stdout.startswith("| run |")
    assert f"loss curves: {tmp_path / 'loss.png'}" in stderr
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
