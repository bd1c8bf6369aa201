"""The `gptkit` command line: one end-to-end journey through the real console entry, then the
conventions (stdout is data, stderr is people, exit codes, one-line errors) checked in-process."""

import json
import math
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import torch

import gptkit
from conftest import TINY_TRAIN_ARGS, make_corpus, run_gptkit_process, subprocess_env
from gptkit.checkpoint import load_checkpoint, save_checkpoint
from gptkit.errors import GptkitError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# --- the journey a new user takes, through `python -m gptkit` ------------------------------------------


def test_end_to_end_prepare_train_eval_sample_resume(tmp_path, shakespeare_file):
    env = subprocess_env(GPTKIT_CACHE=str(tmp_path / "cache"))

    def gptkit_cmd(*args):
        result = run_gptkit_process(list(args), cwd=tmp_path, env=env)
        assert result.code == 0, result.output
        assert "Traceback" not in result.output
        assert "\x1b[" not in result.output  # no colour codes: NO_COLOR is set and stderr is a pipe
        return result

    # prepare: stdout is the data folder, the report goes to stderr
    r = gptkit_cmd("prepare", "shakespeare", "--source", shakespeare_file)
    assert r.stdout == "data/shakespeare\n"
    assert "1,003,854 tokens" in r.stderr and "111,540 tokens" in r.stderr
    assert (tmp_path / "data" / "shakespeare" / "meta.json").is_file()

    # train (defaults: --data data/shakespeare --out out): stdout is the checkpoint's path
    r = gptkit_cmd("train", *TINY_TRAIN_ARGS, "--max-iters", "20", "--eval-interval", "10")
    assert r.stdout == "out/ckpt.safetensors\n"
    assert "step     20/20 | loss" in r.stderr and "val loss" in r.stderr  # plain progress lines: stderr is a pipe
    run = tmp_path / "out"
    assert {"ckpt.safetensors", "best.safetensors", "checkpoints", "config.toml", "metrics.jsonl"} <= {p.name for p in run.iterdir()}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_000010.resume.safetensors", "step_000010.safetensors", "step_000020.resume.safetensors", "step_000020.safetensors",
    ]
    assert load_checkpoint(run / "ckpt.safetensors").step == 20
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "val_loss" in m] == [10, 20]

    # eval --json: one JSON object on stdout, the data folder taken from the checkpoint
    r = gptkit_cmd("eval", "--ckpt", "out/ckpt.safetensors", "--json", "--max-batches", "20")
    result = json.loads(r.stdout)
    assert result["step"] == 20 and result["split"] == "val" and result["data"] == "data/shakespeare"
    assert result["tokens"] == 20 * 16 * 16
    assert 0 < result["val_loss"] < 4.2 and result["perplexity"] > 1 and result["bits_per_byte"] > 0

    # sample: the same seed gives the same text, and stdout holds only the text
    args = ("sample", "--prompt", "ROMEO:", "--max-new-tokens", "60", "--seed", "3", "--device", "cpu")
    first, second = gptkit_cmd(*args), gptkit_cmd(*args)
    assert first.stdout == second.stdout
    assert first.stdout.startswith("ROMEO:") and first.stdout.endswith("\n")
    assert len(first.stdout) <= len("ROMEO:") + 60 + 1

    # resume: continue the saved run to step 30
    r = gptkit_cmd("train", "--resume", "--max-iters", "30")
    assert r.stdout == "out/ckpt.safetensors\n"
    assert "resumed from step 20" in r.stderr
    assert load_checkpoint(run / "ckpt.safetensors").step == 30
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 30 and 20 in steps


def test_cli_import_and_help_do_not_import_torch(tmp_path):
    code = (
        "import sys, gptkit.cli\n"
        "loaded = 'torch' in sys.modules\n"
        "try:\n    gptkit.cli.main(['train', '--help'])\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print(loaded, 'torch' in sys.modules, code, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "False False 0", proc.stderr


# --- conventions, in-process -------------------------------------------------------------------------------


def test_version(run_cli):
    r = run_cli("--version")
    assert r.code == 0 and r.stdout == f"gptkit {gptkit.__version__}\n"


@pytest.mark.parametrize(
    "command",
    [["prepare", "shakespeare"], ["prepare", "text"], ["train"], ["eval"], ["sample"]],
    ids=lambda c: " ".join(c),
)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_of_every_command_has_an_example(run_cli, command, flag):
    r = run_cli(*command, flag)
    assert r.code == 0
    assert "Example" in r.stdout
    assert f"gptkit {' '.join(command)}" in r.stdout  # the example is a real invocation


def test_top_level_and_group_help_have_examples(run_cli):
    r = run_cli("-h")
    assert r.code == 0
    for command in ("prepare", "train", "eval", "sample"):
        assert command in r.stdout
    assert "Example" in r.stdout and "gptkit prepare shakespeare" in r.stdout
    r = run_cli("prepare", "-h")
    assert r.code == 0 and "shakespeare" in r.stdout and "text" in r.stdout
    assert "Example" in r.stdout and "gptkit prepare text" in r.stdout


def test_no_arguments_shows_help_as_bad_usage(run_cli):
    r = run_cli()
    assert r.code == 2 and "Usage: gptkit" in r.output and "Traceback" not in r.output


def test_train_help_lists_presets(run_cli):
    assert "shakespeare-char-cpu" in run_cli("train", "-h").stdout


def test_prepare_text_prints_only_the_folder(run_cli, tmp_path, small_corpus):
    (tmp_path / "a.txt").write_text(small_corpus)
    r = run_cli("prepare", "text", tmp_path / "a.txt", "--out", tmp_path / "d")
    assert r.code == 0 and r.stdout == f"{tmp_path / 'd'}\n"
    assert "tokenizer: char" in r.stderr
    r = run_cli("prepare", "text", tmp_path / "a.txt", "--out", tmp_path / "d", "--json")
    meta = json.loads(r.stdout)
    assert meta["data"] == str(tmp_path / "d") and meta["format"] == "gptkit.data"


def test_train_print_config(run_cli, tmp_path):
    r = run_cli("train", "--preset", "shakespeare-char", "--max-iters", "7", "--n-layer", "3", "--out", tmp_path / "run", "--print-config")
    assert r.code == 0
    config = tomllib.loads(r.stdout)
    assert config["model"]["n_layer"] == 3 and config["model"]["n_embd"] == 384 and config["train"]["max_iters"] == 7
    assert config["model"]["vocab_multiple"] == 1
    r = run_cli("train", "--preset", "gpt2-124m", "--vocab-multiple", "128", "--print-config")
    assert r.code == 0 and tomllib.loads(r.stdout)["model"]["vocab_multiple"] == 128
    assert not (tmp_path / "run").exists()


def test_train_with_a_config_file_and_json(run_cli, tmp_path, tiny_data):
    config = tmp_path / "tiny.toml"
    config.write_text(
        "[model]\nn_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 8\n"
        f"[train]\ndevice = \"cpu\"\nmax_iters = 4\neval_interval = 2\neval_iters = 1\nbatch_size = 2\ndata = \"{tiny_data}\"\n"
    )
    r = run_cli("train", "--config", config, "--out", tmp_path / "run", "--json")
    assert r.code == 0, r.output
    result = json.loads(r.stdout)
    assert result["step"] == 4 and result["checkpoint"] == str(tmp_path / "run" / "ckpt.safetensors")
    ckpt = load_checkpoint(tmp_path / "run" / "ckpt.safetensors")
    assert ckpt.model_config.n_embd == 16 and ckpt.model_config.block_size == 8


def test_train_resume_eval_and_sample_a_padded_vocabulary(run_cli, tmp_path, tiny_data):
    """--vocab-multiple through every stage: the checkpoint keeps the true vocab_size and the padding,
    resume and eval read it back, and sampling stays within the tokenizer's vocabulary."""
    out = tmp_path / "run"
    base = ("train", *TINY_TRAIN_ARGS, "--data", tiny_data, "--out", out, "--eval-interval", "3")
    r = run_cli(*base, "--max-iters", "3", "--vocab-multiple", "64")
    assert r.code == 0, r.output
    ckpt = load_checkpoint(out / "ckpt.safetensors")
    vocab = json.loads((tiny_data / "meta.json").read_text())["vocab_size"]
    assert (ckpt.model_config.vocab_size, ckpt.model_config.vocab_multiple) == (vocab, 64)
    assert ckpt.state_dict["token_embedding.weight"].shape[0] == 64 * -(-vocab // 64)
    r = run_cli("train", "--out", out, "--resume", "--max-iters", "6", "--device", "cpu")
    assert r.code == 0, r.output
    assert load_checkpoint(out / "ckpt.safetensors").model_config.vocab_multiple == 64
    r = run_cli("eval", "--ckpt", out / "ckpt.safetensors", "--device", "cpu", "--json")
    assert r.code == 0, r.output
    assert 0 < json.loads(r.stdout)["val_loss"] < 2 * math.log(vocab)
    r = run_cli("sample", "--ckpt", out / "ckpt.safetensors", "--device", "cpu", "--max-new-tokens", "40",
                "--temperature", "1.5", "--top-k", "0", "--seed", "3", "--no-stop-at-eot", "--json", "--prompt", "The")
    assert r.code == 0, r.output
    assert set(json.loads(r.stdout)["completion"]) <= set(ckpt.tokenizer_spec["chars"]) | set("<|endoftext|>")


def test_eval_plain_output(run_cli, tiny_run):
    r = run_cli("eval", "--ckpt", tiny_run.ckpt, "--device", "cpu")
    assert r.code == 0
    rows = dict(line.split("\t") for line in r.stdout.splitlines())
    assert list(rows) == ["val_loss", "perplexity", "bits_per_byte", "tokens", "step"]
    assert rows["step"] == "30" and float(rows["val_loss"]) == pytest.approx(tiny_run.result.val_loss, abs=0.3)


def test_sample_seed_json_stdin_and_echo(run_cli, tiny_run):
    base = ("sample", "--ckpt", tiny_run.ckpt, "--device", "cpu", "--max-new-tokens", "30", "--seed", "5")
    a, b = run_cli(*base, "--prompt", "The "), run_cli(*base, "--prompt", "The ")
    assert a.code == 0 and a.stdout == b.stdout and a.stdout.startswith("The ")
    assert a.stderr == ""
    assert run_cli(*base, "--prompt", "The ", "--seed", "6").stdout != a.stdout
    piped = run_cli(*base, stdin="The ")  # the prompt read from a pipe
    assert piped.stdout == a.stdout
    no_echo = run_cli(*base, "--prompt", "The ", "--no-echo")
    assert "The " + no_echo.stdout == a.stdout
    r = run_cli(*base, "--prompt", "The ", "--num-samples", "2", "--json")
    samples = [json.loads(line) for line in r.stdout.splitlines()]
    assert [s["sample"] for s in samples] == [0, 1] and all(s["prompt"] == "The " for s in samples)
    assert "The " + samples[0]["completion"] + "\n" == a.stdout
    r = run_cli(*base, "--prompt", "The ", "--num-samples", "2")
    assert r.stdout.count("\n---\n") == 1


def test_sample_prompt_file(run_cli, tiny_run, tmp_path):
    (tmp_path / "p.txt").write_text("my lord")
    r = run_cli("sample", "--ckpt", tiny_run.ckpt, "--prompt-file", tmp_path / "p.txt", "--max-new-tokens", "5", "--temperature", "0")
    assert r.code == 0 and r.stdout.startswith("my lord") and len(r.stdout) == len("my lord") + 5 + 1


def test_debug_mode_shows_the_exception(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("GPTKIT_DEBUG", "1")
    with pytest.raises(GptkitError, match="does not exist"):
        run_cli("eval", "--ckpt", tmp_path / "nope.safetensors")


def test_unexpected_exception_is_one_line_with_a_report_hint(run_cli, tiny_run, monkeypatch):
    import gptkit.evaluate

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(gptkit.evaluate, "evaluate", broken)
    r = run_cli("eval", "--ckpt", tiny_run.ckpt)
    assert r.code == 1
    assert_one_error_line(r)
    assert "Error: unexpected ZeroDivisionError: division by zero" in r.stderr
    assert "GPTKIT_DEBUG=1" in r.stderr


def test_offline_prepare_suggests_source(run_cli, tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    r = run_cli("prepare", "shakespeare", "--out", tmp_path / "d")
    assert r.code == 1
    assert_one_error_line(r)
    assert "could not download shakespeare" in r.stderr and "--source FILE" in r.stderr


# --- user mistakes: exit code, one `Error:` line (and maybe a `Hint:`), never a traceback ---------------


def assert_one_error_line(r):
    lines = r.output.splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    hints = [line for line in lines if line.startswith("Hint:")]
    assert len(errors) == 1, r.output
    assert len(hints) <= 1, r.output
    assert "Traceback" not in r.output
    assert r.stdout == "", r.output  # data only on stdout; there is none
    return errors[0]


@pytest.fixture(scope="module")
def mistakes_setup(tmp_path_factory, tiny_run):
    """Files the mistakes refer to: a corrupted checkpoint, data with another tokenizer, ..."""
    root = tmp_path_factory.mktemp("mistakes")
    corrupted = root / "corrupted.safetensors"
    raw = bytearray(tiny_run.ckpt.read_bytes())
    raw[-50] ^= 0xFF
    corrupted.write_bytes(bytes(raw))
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(tiny_run.ckpt.read_bytes()[:5000])
    (root / "other.txt").write_text(make_corpus(3000, seed=9).upper())
    (root / "empty-folder").mkdir()
    (root / "bad.toml").write_text("[model]\nn_layers = 2\n")
    no_data = root / "no-data.safetensors"
    ckpt = load_checkpoint(tiny_run.ckpt)
    save_checkpoint(no_data, ckpt.build_model(), ckpt.tokenizer_spec, step=1)  # no train_config: no data folder
    return root


E, U = 1, 2  # failure, bad usage
# More mistakes, each also checked for damaged or left-over files, are in test_user_errors.py: this table
# keeps the ones it does not have (the parser's own errors, eval and sample without --data, lone files).
MISTAKES = {
    # name: (expected exit code, expected text in the Error line, argv with {root} {run} {ckpt} {data})
    "wrong checkpoint path": (E, "checkpoint {root}/missing.safetensors does not exist", ["sample", "--ckpt", "{root}/missing.safetensors"]),
    "directory as --ckpt": (E, "checkpoint {root}/empty-folder is a folder", ["eval", "--ckpt", "{root}/empty-folder"]),  # a run folder is a checkpoint
    "unknown preset": (U, "unknown preset 'shakespeare-gpu'", ["train", "--preset", "shakespeare-gpu", "--data", "{data}"]),
    "unknown option": (U, "No such option: --layers", ["train", "--layers", "4"]),
    "unknown command": (U, "No such command", ["finetuning"]),
    "option value of the wrong type": (U, "Invalid value for '--max-iters'", ["train", "--max-iters", "many"]),
    "bad config file": (U, "unknown setting(s) n_layers", ["train", "--config", "{root}/bad.toml"]),
    "missing config file": (U, "config file {root}/nope.toml does not exist", ["train", "--config", "{root}/nope.toml"]),
    "resume with nothing to resume": (E, "cannot resume: {root}/empty-folder holds no saved training state (checkpoints/step_*.safetensors)", ["train", "--resume", "--out", "{root}/empty-folder"]),
    "resume with model options": (U, "--resume continues a run with its saved config", ["train", "--resume", "--out", "{run}", "--n-layer", "3"]),
    "eval on a split that does not exist": (E, "has no 'test' split", ["eval", "--ckpt", "{ckpt}", "--split", "test"]),
    "eval of a checkpoint that does not record its data": (U, "does not record its data folder", ["eval", "--ckpt", "{root}/no-data.safetensors"]),
    "corrupted checkpoint": (E, "is corrupted: its weights do not match the checksum", ["eval", "--ckpt", "{root}/corrupted.safetensors", "--data", "{data}"]),
    "truncated checkpoint": (E, "{root}/truncated.safetensors is not a readable safetensors file (truncated or damaged", ["sample", "--ckpt", "{root}/truncated.safetensors"]),
    "a text file as checkpoint": (E, "is not a readable safetensors file", ["sample", "--ckpt", "{root}/bad.toml"]),
    "missing prompt file": (E, "{root}/nope.txt does not exist", ["sample", "--ckpt", "{ckpt}", "--prompt-file", "{root}/nope.txt"]),
    "empty folder of text": (E, "holds no files", ["prepare", "text", "{root}/empty-folder", "--out", "{root}/d1"]),
    "prepare text without files": (U, "Missing argument", ["prepare", "text"]),
    "missing --source file": (E, "{root}/nope.txt does not exist", ["prepare", "shakespeare", "--source", "{root}/nope.txt", "--out", "{root}/d1"]),
    "prepare into a folder of other files": (E, "--out {root} already holds files that are not gptkit data", ["prepare", "text", "{root}/other.txt", "--out", "{root}"]),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_user_mistake(name, run_cli, mistakes_setup, tiny_run):
    code, message, argv = MISTAKES[name]
    values = dict(root=mistakes_setup, run=tiny_run.out, ckpt=tiny_run.ckpt, data=tiny_run.data)
    argv = [a.format(**values) for a in argv]
    r = run_cli(*argv)
    assert r.code == code, r.output
    error = assert_one_error_line(r)
    assert message.format(**values) in error, r.output


def test_cuda_without_a_gpu(run_cli, tiny_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    r = run_cli("train", "--device", "cuda", "--data", tiny_data, "--out", tmp_path / "run")
    assert r.code == 1
    assert "--device cuda was asked for" in assert_one_error_line(r)


def test_mistakes_leave_the_run_untouched(tiny_run, mistakes_setup):
    # the table above tried to resume the shared run with options and to evaluate it: nothing changed
    assert load_checkpoint(tiny_run.ckpt).step == 30
    assert not (mistakes_setup / "d1").exists()
