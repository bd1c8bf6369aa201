"""A new user's first hour (issue 14): one default checkpoint path, run folders wherever a checkpoint
is read, "not a checkpoint" said the same way by every command, and the messages a newcomer meets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gptkit.checkpoint import load_checkpoint
from gptkit.checkpoint_format import CHECKPOINT_HINT

common_train = ["--device", "cpu", "--dtype", "float32", "--batch-size", "4", "--eval-iters", "2"]


def _one_error(result) -> tuple[str, str]:
    """The Error: line and the Hint: line (or '') at the end of stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    tail = lines[errors[0] :]
    assert len(tail) <= 2, result.stderr
    return tail[0], tail[1] if len(tail) == 2 else ""


# --- --ckpt takes a run folder, in every command that reads a checkpoint ---------------------------


def test_the_script_the_defaults_and_the_readme_name_one_run_folder():
    root = Path(__file__).resolve().parents[1]
    script = (root / "examples" / "shakespeare.sh").read_text()
    assert "OUT=${OUT:-out}" in script
    from gptkit.cli.eval import eval_cmd
    from gptkit.cli.export import export_cmd
    from gptkit.cli.sample import sample
    from gptkit.config import TrainConfig

    for command in (eval_cmd, sample, export_cmd):
        import inspect

        assert inspect.signature(command).parameters["ckpt"].default.default == Path("out")
    assert TrainConfig().out == "out"
    assert "out/shakespeare" not in (root / "README.md").read_text()


def test_eval_takes_a_run_folder(tiny_run, run_cli):
    r = run_cli("eval", "--ckpt", tiny_run.out, "--max-batches", "2", "--device", "cpu", "--json")
    assert r.code == 0, r.output
    assert '"step": 30' in r.stdout


def test_sample_takes_a_run_folder(tiny_run, run_cli):
    r = run_cli("sample", "--ckpt", tiny_run.out, "--max-new-tokens", "5", "--seed", "1", "--device", "cpu", "--prompt", "a")
    assert r.code == 0, r.output
    assert r.stdout.startswith("a") and len(r.stdout) <= 1 + 5 + 1


def test_sample_defaults_to_the_out_run_folder(tiny_run, run_cli, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_run.out, tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    r = run_cli("sample", "--max-new-tokens", "3", "--seed", "1", "--device", "cpu", "--prompt", "a")
    assert r.code == 0, r.output


def test_finetune_takes_a_run_folder(tiny_run, run_cli, tmp_path):
    out = tmp_path / "ft"
    r = run_cli("finetune", "--ckpt", tiny_run.out, "--data", tiny_run.data, "--out", out, "--max-iters", "2", "--eval-interval", "2", *common_train)
    assert r.code == 0, r.output
    assert load_checkpoint(out / "ckpt.safetensors").step == 2


def test_train_init_from_takes_a_run_folder(tiny_run, run_cli, tmp_path):
    out = tmp_path / "init"
    r = run_cli("train", "--init-from", tiny_run.out, "--data", tiny_run.data, "--out", out, "--max-iters", "2", "--eval-interval", "2", *common_train)
    assert r.code == 0, r.output
    assert load_checkpoint(out / "ckpt.safetensors").step == 2


def test_export_takes_a_run_folder(tiny_run, run_cli, tmp_path):
    pytest.importorskip("tokenizers")
    r = run_cli("export", "--ckpt", tiny_run.out, "--format", "hf", "--out", tmp_path / "hf")
    assert r.code == 0, r.output
    assert (tmp_path / "hf" / "config.json").is_file()


def test_a_folder_without_a_checkpoint_says_so(tiny_run, run_cli):
    r = run_cli("sample", "--ckpt", tiny_run.data, "--prompt", "a")
    error, hint = _one_error(r)
    assert r.code == 1 and "is a folder without ckpt.safetensors" in error and "run folder" in hint


# --- a text file as --ckpt: "not a checkpoint", the same words in every command --------------------


def _commands(text: Path, run, tmp_path: Path) -> dict[str, list]:
    return {
        "eval": ["eval", "--ckpt", text, "--data", run.data],
        "eval-default-data": ["eval", "--ckpt", text],
        "sample": ["sample", "--ckpt", text, "--prompt", "a"],
        "finetune": ["finetune", "--ckpt", text, "--data", run.data, "--out", tmp_path / "ft", *common_train],
        "export": ["export", "--ckpt", text, "--format", "hf", "--out", tmp_path / "hf"],
        "train-init-from": ["train", "--init-from", text, "--data", run.data, "--out", tmp_path / "t", *common_train],
        "convert": ["train", "--init-from", text, "--max-iters", "0", "--out", tmp_path / "c"],
    }


@pytest.mark.parametrize("command", ["eval", "eval-default-data", "sample", "finetune", "export", "train-init-from", "convert"])
def test_a_text_file_is_not_a_checkpoint_in_every_command(command, tiny_run, run_cli, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("These are my notes, not a model.\n" * 20)
    r = run_cli(*_commands(text, tiny_run, tmp_path)[command])
    error, hint = _one_error(r)
    assert r.code == 1, r.output
    assert error == f"Error: {text} is not a gptkit checkpoint (not a safetensors file)"
    assert hint == f"Hint: {CHECKPOINT_HINT}"
    assert "Traceback" not in r.output
    assert not any((tmp_path / name).exists() for name in ("ft", "hf", "t", "c"))


def test_a_missing_checkpoint_names_the_run_folder_default(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli("sample", "--prompt", "a")
    error, hint = _one_error(r)
    assert r.code == 1 and "checkpoint out does not exist" in error and "gptkit train" in hint
    assert os.listdir(tmp_path) == []
