"""A new user's first hour (issue 14): one default checkpoint path, run folders wherever a checkpoint
is read, "not a checkpoint" said the same way by every command, and the messages a newcomer meets."""

from __future__ import annotations

import os
import signal
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
    assert r.code == 1 and "is a folder without ckpt.safetensors" in error and "ckpt.safetensors" in hint


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
    assert error == f"Error: {text} is not a gptkit checkpoint: it is not a readable safetensors file"
    assert hint == f"Hint: {CHECKPOINT_HINT}"
    assert "Traceback" not in r.output
    assert not any((tmp_path / name).exists() for name in ("ft", "hf", "t", "c"))


def test_a_missing_checkpoint_names_the_run_folder_default(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli("sample", "--prompt", "a")
    error, hint = _one_error(r)
    assert r.code == 1 and "checkpoint out does not exist" in error and "gptkit train" in hint
    assert os.listdir(tmp_path) == []


# --- training defaults: the schedule follows the run, the banner says what is trained -------------

import tomllib  # noqa: E402  (Python 3.11+, as the project's own TOML reading)

from conftest import TINY_TRAIN_ARGS  # noqa: E402


def _printed_config(run_cli, *args) -> dict:
    r = run_cli("train", *args, "--print-config")
    assert r.code == 0, r.output
    return tomllib.loads(r.stdout)


def test_a_short_preset_run_decays_to_its_end_and_warms_up_a_tenth(run_cli, tmp_path):
    from gptkit.config import PRESETS, TrainConfig
    from gptkit.schedule import learning_rate_at

    assert not any("lr_decay_iters" in p.train for p in PRESETS.values())  # presets no longer hard-code it
    train = _printed_config(run_cli, "--preset", "shakespeare-char-cpu", "--max-iters", "150", "--out", tmp_path / "o")["train"]
    assert train["lr_decay_iters"] == 150 and train["warmup_iters"] == 15
    cfg = TrainConfig(**train)
    assert learning_rate_at(149, cfg) < 1.01 * cfg.min_lr  # it anneals: the last step is at min_lr
    full = _printed_config(run_cli, "--preset", "shakespeare-char-cpu", "--out", tmp_path / "o")["train"]
    assert (full["lr_decay_iters"], full["warmup_iters"]) == (2000, 100)  # the preset's own run is unchanged


def test_a_schedule_the_user_sets_is_kept(run_cli, tmp_path):
    train = _printed_config(run_cli, "--preset", "shakespeare-char-cpu", "--max-iters", "150", "--lr-decay-iters", "2000",
                            "--warmup-iters", "100", "--out", tmp_path / "o")["train"]
    assert train["lr_decay_iters"] == 2000 and train["warmup_iters"] == 100
    toml = tmp_path / "c.toml"
    toml.write_text("[train]\nlr_decay_iters = 900\n")
    train = _printed_config(run_cli, "--preset", "shakespeare-char-cpu", "--config", toml, "--max-iters", "150")["train"]
    assert train["lr_decay_iters"] == 900 and train["warmup_iters"] == 15


def test_print_config_says_the_vocabulary_comes_from_the_data(run_cli, tiny_data, tmp_path):
    import json

    vocab = json.loads((tiny_data / "meta.json").read_text())["vocab_size"]
    r = run_cli("train", "--data", tiny_data, "--print-config")
    assert f"vocab_size = {vocab}  # set from the data ({tiny_data / 'meta.json'})" in r.stdout.splitlines()
    assert tomllib.loads(r.stdout)["model"]["vocab_size"] == vocab
    r = run_cli("train", "--data", tmp_path / "not-yet", "--print-config")
    line = next(line for line in r.stdout.splitlines() if line.startswith("vocab_size"))
    assert "placeholder: set from the data's tokenizer when training starts" in line


def test_the_start_banner_says_what_is_trained_and_the_end_labels_the_losses(run_cli, tiny_data, tmp_path):
    out = tmp_path / "muon"
    r = run_cli("train", *TINY_TRAIN_ARGS, "--data", tiny_data, "--out", out, "--max-iters", "4", "--eval-interval", "4",
                "--optimizer", "muon", "--muon-lr", "0.02", "--warmup-iters", "1", "--min-lr", "3e-4")
    assert r.code == 0, r.output
    lines = r.stderr.splitlines()
    model = next(line for line in lines if line.startswith("model: "))
    assert "parameters (all trained)" in model and "2 layers x 2 heads, 32 wide, context 16" in model
    optimizer = next(line for line in lines if line.startswith("optimizer: "))
    assert "Muon lr 2.00e-02" in optimizer and "AdamW lr 3.00e-03" in optimizer
    schedule = next(line for line in lines if line.startswith("schedule: "))
    assert "cosine | warmup 1 steps | decay to min_lr 3.00e-04 at step 4 | 4 steps of 128 tokens (8 x 16 x grad_accum 1)" in schedule
    done = next(line for line in lines if line.startswith("done: "))
    assert "at the last evaluation, best" in done and "each on 2 batches" in done

    again = run_cli("train", "--out", out, "--resume")
    assert again.code == 0, again.output
    assert "nothing to do: the run is already at step 4" in again.stderr
    assert "ms/iter" not in again.stderr and "done:" not in again.stderr
    assert again.stdout.strip() == str(out / "ckpt.safetensors")


def test_compile_help_says_where_it_pays_off(run_cli):
    import re

    r = run_cli("train", "--help")
    assert "pays off on GPUs" in " ".join(re.sub("[│╭╮╰╯─]", " ", r.stdout).split())


def _ctrl_c_as_in_a_terminal():
    """A child started by a shell in the background (`pytest &`, nohup) inherits SIGINT ignored, and
    gptkit keeps an ignored Ctrl-C ignored; the test is about a terminal's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("delay", [0.4, 1.0, 2.0, 3.0, "banner"])
def test_ctrl_c_while_train_starts_leaves_no_empty_run_folder(delay, tiny_data, tmp_path):
    """Ctrl-C at any moment of the start (imports, checks, building the model, the first steps):
    exit 130 with a message, and the run folder is either gone or holds a saved step."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO_ROOT, subprocess_env
    from gptkit.run_folder import saved_steps

    out = tmp_path / "run"
    args = ["train", *TINY_TRAIN_ARGS, "--data", tiny_data, "--out", out, "--max-iters", "100000", "--eval-interval", "50000"]
    process = subprocess.Popen([sys.executable, "-m", "gptkit", *map(str, args)], cwd=REPO_ROOT, env=subprocess_env(),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_ctrl_c_as_in_a_terminal)
    if delay == "banner":
        seen = ""
        while "schedule:" not in seen:
            line = process.stderr.readline()
            assert line, "the process ended before its banner"
            seen += line
    else:
        time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    # 130; or killed by the SIGINT itself (-2, which a shell reports as 130 too) when it lands while
    # Python is still shutting down the interrupted start
    assert process.returncode in (130, -signal.SIGINT), stderr
    assert "Interrupted" in stderr and "Traceback" not in stderr, stderr
    assert not out.exists() or saved_steps(out), sorted(p.name for p in out.iterdir())


# --- help texts: plain metavars, never cut at 80 columns, brackets kept, defaults shown ----------

COMMAND_PATHS = [
    [], ["train"], ["eval"], ["sample"], ["finetune"], ["export"], ["report"], ["prepare"], ["prepare", "shakespeare"],
    ["prepare", "text"], ["prepare", "verify"], ["prepare", "instructions"], ["prepare", "hf"], ["tokenize"],
    ["tokenize", "train"], ["tokenize", "encode"], ["tokenize", "decode"], ["tokenize", "inspect"],
]


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=[" ".join(p) or "gptkit" for p in COMMAND_PATHS])
def test_help_at_80_columns_is_whole_and_plain(path, run_cli, monkeypatch):
    import re

    monkeypatch.setenv("COLUMNS", "80")
    r = run_cli(*path, "--help")
    assert r.code == 0, r.output
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "…" not in r.stdout  # a long word folds onto the next line instead of being cut
    assert "<bool>" not in r.stdout and "list[" not in r.stdout and "<str>" not in r.stdout
    usage = next(line for line in lines if "Usage:" in line)
    assert not re.search(r"\{[a-z_]+\}", usage), usage  # PATHS..., not {paths}...


def test_help_keeps_the_extras_names(run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert "gptkit[tensorboard]" in run_cli("train", "--help").stdout
    assert "gptkit[report]" in run_cli("report", "--help").stdout
    assert "gptkit[hf]" in run_cli("train", "--help").stdout


def _commands_of(command, prefix=()):
    yield prefix, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands_of(sub, (*prefix, name))


def test_every_option_with_a_default_shows_it(run_cli, monkeypatch):
    """Each option whose default is a value (not None, an off flag or an empty repeatable option) has `[default: ...]` in its row."""
    import re

    import typer

    from gptkit.cli import app

    monkeypatch.setenv("COLUMNS", "400")  # one line per option row
    missing = []
    for path, command in _commands_of(typer.main.get_command(app)):
        text = run_cli(*path, "--help").stdout
        rows = {}
        for line in text.splitlines():
            found = re.match(r"^│\s*\*?\s*(--[\w-]+)", line)
            if found:
                rows[found.group(1)] = line
        for param in command.params:
            if param.param_type_name != "option" or param.default in (None, False, [], ()) or param.hidden or not param.opts:
                continue
            row = rows.get(param.opts[0])
            if row is None or "[default:" not in row:
                missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert not missing, missing


# --- unknown commands and exit codes ------------------------------------------------------------


def test_a_command_known_by_another_name_points_to_it(run_cli):
    r = run_cli("generate", "--prompt", "x")
    error, hint = _one_error(r)
    assert r.code == 2 and error == "Error: No such command 'generate'. Did you mean 'sample'?"
    r = run_cli("trian")
    assert r.code == 2 and "Did you mean 'train'?" in _one_error(r)[0]  # the parser's close matches stay


def test_a_usage_mistake_is_exit_code_2_whatever_else_is_wrong(run_cli, tmp_path):
    r = run_cli("train", "--lr", "-1", "--data", tmp_path / "nowhere", "--out", tmp_path / "run")
    error, _ = _one_error(r)
    assert r.code == 2 and "learning_rate must be positive" in error and "nowhere does not exist" in error
    assert not (tmp_path / "run").exists()


# --- messages -------------------------------------------------------------------------------------


def test_a_toml_file_reports_every_unknown_table_and_key_at_once(run_cli, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[modle]\nn_layer = 2\n[train]\nlearning_rat = 1e-3\nn_embd = 64\nbatch_size = "big"\n')
    r = run_cli("train", "--config", toml)
    error, hint = _one_error(r)
    assert r.code == 2
    assert "unknown table(s) modle" in error and "unknown setting(s) learning_rat, n_embd in [train]" in error
    assert "batch_size should be a int, got 'big'" in error
    assert "[model] (not [modle])" in hint and "learning_rate (not learning_rat)" in hint and "n_embd in [model] (not [train])" in hint
    assert "numbers take no quotes" in hint


def test_a_bad_type_in_toml_has_a_hint(run_cli, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\nmax_iters = "100"\n')
    error, hint = _one_error(run_cli("train", "--config", toml))
    assert "max_iters should be a int, got '100'" in error and "numbers take no quotes" in hint


def test_a_missing_input_file_and_an_empty_text_have_hints(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error, hint = _one_error(run_cli("prepare", "text", "nope.txt", "--out", "d"))
    assert error == "Error: nope.txt does not exist" and f"current folder, {tmp_path}" in hint
    (tmp_path / "e.txt").write_text("")
    error, hint = _one_error(run_cli("prepare", "text", "e.txt", "--out", "d"))
    assert "the input text is empty" in error and "holds no characters" in hint


def test_a_bad_shakespeare_variable_is_named(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("GPTKIT_SHAKESPEARE", str(tmp_path / "nope.txt"))
    r = run_cli("prepare", "shakespeare", "--out", tmp_path / "d")
    error, hint = _one_error(r)
    assert r.code == 1 and error == f"Error: GPTKIT_SHAKESPEARE={tmp_path / 'nope.txt'}: no such file"
    assert "unset it" in hint


def test_tokenize_train_says_why_it_gives_fewer_ids(run_cli, tmp_path):
    text = tmp_path / "small.txt"
    text.write_text("to be or not to be, that is the question\n" * 20)
    r = run_cli("tokenize", "train", "--kind", "bpe", "--vocab-size", "4096", text, "--out", tmp_path / "tok")
    assert r.code == 0, r.output
    warning = next(line for line in r.stderr.splitlines() if line.startswith("warning:"))
    assert "asked for 4,096 ids, got" in warning and "ran out of pairs to merge" in warning


def test_the_sentencepiece_error_names_only_gptkit_options(run_cli, tmp_path):
    pytest.importorskip("sentencepiece")
    text = tmp_path / "chars.txt"
    text.write_text("".join(chr(c) for c in range(0x4E00, 0x4E00 + 300)) * 3 + "\n")
    r = run_cli("tokenize", "train", "--kind", "sp-unigram", "--vocab-size", "50", text, "--out", tmp_path / "tok")
    error, hint = _one_error(r)
    assert r.code == 1 and "character_coverage" not in r.stderr
    assert "give --vocab-size at least" in hint


def test_the_offline_tiktoken_error_is_whole_and_its_hint_fits_every_command(monkeypatch):
    tiktoken = pytest.importorskip("tiktoken")
    from gptkit.errors import GptkitError
    from gptkit.tokenizers.pretrained import load_tiktoken_encoding

    long_reason = ("HTTPSConnectionPool(host='openaipublic.blob.core.windows.net', port=443): Max retries exceeded with url: "
                   "/encodings/gpt2.tiktoken (Caused by NameResolutionError(\"Failed to resolve host\"))")
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: (_ for _ in ()).throw(ConnectionError(long_reason)))
    with pytest.raises(GptkitError) as info:
        load_tiktoken_encoding("gpt2")
    words = info.value.message.split("(ConnectionError: ")[1][:-1].split()
    assert words[-1] == "..." and all(word in long_reason.split() for word in words[:-1])  # cut between words, never inside one
    assert "--tokenizer char" not in info.value.hint and "TIKTOKEN_CACHE_DIR" in info.value.hint


def test_a_decode_error_shows_the_line_as_text(run_cli, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abc abc abc\n" * 10)
    assert run_cli("tokenize", "train", "--kind", "char", text, "--out", tmp_path / "tok").code == 0
    (tmp_path / "ids.txt").write_text("abc\n")
    r = run_cli("tokenize", "decode", "--tokenizer", tmp_path / "tok", tmp_path / "ids.txt")
    error, _ = _one_error(r)
    assert "b'" not in error and "“abc”" in error


def test_report_draws_beside_the_run_not_in_the_current_folder(tiny_run, run_cli, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import shutil

    run = tmp_path / "runs" / "a"
    shutil.copytree(tiny_run.out, run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = run_cli("report", run, "--json")
    assert r.code == 0, r.output
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert list(elsewhere.iterdir()) == []
    assert f"loss curves: {run / 'loss.png'}" in r.stderr


# --- start-up: commands that need no torch do not import it ----------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["tokenize", "--help"], ["train", "--help"], ["report", "{run}", "--no-plot"],
                                  ["tokenize", "encode", "--tokenizer", "{run}", "{text}"]],
                         ids=["help", "tokenize-help", "train-help", "report", "tokenize-encode"])
def test_commands_that_need_no_torch_do_not_import_it(args, tiny_run, tmp_path):
    import json
    import subprocess
    import sys

    from conftest import REPO_ROOT, subprocess_env

    text = tmp_path / "t.txt"
    text.write_text("a\n")  # a character of the tiny corpus
    argv = [a.format(run=tiny_run.out, text=text) for a in args]
    probe = (
        "import sys, json, runpy\n"
        f"sys.argv = ['gptkit', *{argv!r}]\n"
        "try:\n    runpy.run_module('gptkit', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, 'matplotlib': 'matplotlib' in sys.modules}), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    assert result["code"] in (0, None), proc.stderr
    assert not result["torch"] and not result["matplotlib"]
