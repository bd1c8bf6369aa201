"""`gptkit sample` on the engine: --jsonl, --logprobs, --stop, the new controls, Ctrl-C and <|endoftext|>."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import subprocess_env


def lines(stdout):
    return [json.loads(line) for line in stdout.splitlines()]


def test_jsonl_batches_prompts_with_their_own_settings_in_order(run_cli, tiny_run):
    base = ("sample", "--ckpt", tiny_run.ckpt, "--device", "cpu", "--max-new-tokens", "12", "--seed", "2")
    stdin = "\n".join([
        json.dumps({"prompt": "The ", "temperature": 0}),
        json.dumps({"prompt": "my lord", "max_new_tokens": 5, "id": "b"}),
        "",  # blank lines are skipped
        json.dumps({"prompt": "the", "temperature": 0, "stop": "e", "logprobs": 2}),
    ]) + "\n"
    r = run_cli(*base, "--jsonl", "-", "--batch-size", "2", stdin=stdin)
    assert r.code == 0, r.stderr
    out = lines(r.stdout)
    assert [o["prompt"] for o in out] == ["The ", "my lord", "the"] and out[1]["id"] == "b"
    assert out[0]["tokens"] == 12 and out[0]["finish_reason"] == "length" and out[1]["tokens"] == 5
    # the greedy line equals the same prompt sampled alone with --json
    alone = lines(run_cli(*base, "--prompt", "The ", "--temperature", "0", "--json").stdout)[0]
    assert alone["completion"] == out[0]["completion"] and alone["finish_reason"] == "length"
    assert "logprobs" not in out[0]
    stopped = out[2]
    assert "e" not in stopped["completion"]
    if stopped["finish_reason"] == "stop":
        assert len(stopped["logprobs"]) == stopped["tokens"]
    record = stopped["logprobs"][0]
    assert set(record) == {"token", "id", "logprob", "top"} and len(record["top"]) == 2
    assert record["top"][0]["logprob"] >= record["top"][1]["logprob"] and record["logprob"] == pytest.approx(record["top"][0]["logprob"])


def test_jsonl_mistakes_name_the_line(run_cli, tiny_run, tmp_path):
    base = ("sample", "--ckpt", tiny_run.ckpt, "--device", "cpu", "--max-new-tokens", "3")
    r = run_cli(*base, "--jsonl", "-", stdin='{"prompt": "a"}\n{"prompt": "b", "temprature": 1}\n')
    assert r.code == 1 and "line 2 has unknown settings: temprature" in r.stderr
    r = run_cli(*base, "--jsonl", "-", stdin="not json\n")
    assert r.code == 1 and "line 1 is not JSON" in r.stderr
    r = run_cli(*base, "--jsonl", "-", stdin='{"prompt": "a", "top_p": 3}\n')
    assert r.code == 1 and "line 1: sampling: top_p must be in (0, 1]" in r.stderr
    r = run_cli(*base, "--jsonl", tmp_path / "none.jsonl")
    assert r.code == 1 and "none.jsonl does not exist" in r.stderr
    r = run_cli(*base, "--logprobs", "2")
    assert r.code == 2 and "--logprobs needs --json or --jsonl" in r.stderr
    r = run_cli(*base, "--quantize", "int4")
    assert r.code == 2 and "--quantize must be int8" in r.stderr


def test_json_sample_with_the_new_controls_logprobs_and_stop(run_cli, tiny_run):
    base = ("sample", "--ckpt", tiny_run.ckpt, "--device", "cpu", "--max-new-tokens", "40", "--prompt", "The ")
    greedy = lines(run_cli(*base, "--temperature", "0", "--json").stdout)[0]
    stop = greedy["completion"][5:7]
    r = run_cli(*base, "--temperature", "0", "--json", "--stop", "qqq", "--stop", stop, "--logprobs", "0")
    [out] = lines(r.stdout)
    assert out["completion"] == greedy["completion"][: greedy["completion"].index(stop)] and out["finish_reason"] == "stop"
    assert all("top" not in record for record in out["logprobs"]) and all(rec["logprob"] <= 0 for rec in out["logprobs"])
    r = run_cli(*base, "--seed", "1", "--top-p", "0.9", "--min-p", "0.05", "--repetition-penalty", "1.3",
                "--frequency-penalty", "0.5", "--presence-penalty", "0.5", "--dtype", "float32", "-n", "3", "--batch-size", "2", "--json")
    out = lines(r.stdout)
    assert r.code == 0 and [o["sample"] for o in out] == [0, 1, 2] and all(o["tokens"] == 40 for o in out)


def test_quantized_int8_samples_on_cpu(run_cli, tiny_run):
    r = run_cli("sample", "--ckpt", tiny_run.ckpt, "--device", "cpu", "--max-new-tokens", "20", "--temperature", "0",
                "--quantize", "int8", "--prompt", "the", "--no-echo")
    assert r.code == 0 and len(r.stdout) == 21  # a char model: one character per token, then a newline


def test_a_sample_that_ends_at_end_of_text_says_so(run_cli, tiny_run, monkeypatch):
    import gptkit.engine

    from gptkit.checkpoint import load_checkpoint

    eot = load_checkpoint(tiny_run.ckpt).tokenizer().eot_id
    calls = []
    real_choose = gptkit.engine.choose

    def eot_on_fourth(logits, *args):
        calls.append(1)
        chosen = real_choose(logits, *args)
        return torch.full_like(chosen, eot) if len(calls) == 4 else chosen

    monkeypatch.setattr(gptkit.engine, "choose", eot_on_fourth)
    r = run_cli("sample", "--ckpt", tiny_run.ckpt, "--device", "cpu", "--max-new-tokens", "30", "--prompt", "the", "--no-echo", "--temperature", "0")
    assert r.code == 0 and len(r.stdout) == 3 + 1
    assert "sample 1 ended at <|endoftext|> after 4 tokens" in r.stderr
    calls.clear()
    [out] = lines(run_cli("sample", "--ckpt", tiny_run.ckpt, "--device", "cpu", "--max-new-tokens", "30", "--json", "--temperature", "0").stdout)
    assert out["finish_reason"] == "stop" and out["tokens"] == 4 and len(out["completion"]) == 3


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_ends_the_line_and_says_what_stopped(tiny_run, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "gptkit", "sample", "--ckpt", str(tiny_run.ckpt), "--device", "cpu",
         "--max-new-tokens", "1000000", "--prompt", "The ", "--num-samples", "2", "--no-stop-at-eot"],
        cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first = process.stdout.read(10)  # text is streaming
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert first.startswith("The ") and out.endswith("\n")
    assert "Interrupted: sample 1 of 2 stopped after" in err and "new tokens" in err and "Traceback" not in err


def test_stop_understands_newline_and_tab_escapes():
    from gptkit.cli.sample import _unescape

    assert _unescape(r"\n\n") == "\n\n" and _unescape(r"a\tb") == "a\tb"
    assert _unescape(r"\\n") == "\\n" and _unescape(r"\x") == "\\x"  # an escaped backslash, an unknown escape
