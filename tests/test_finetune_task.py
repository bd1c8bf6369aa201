"""examples/finetune_task.py on a tiny scale: the task generator, the exact-match scorer, and the whole
journey (prepare instructions -> score -> finetune full and LoRA -> score) with a few iterations. It
checks that the pipeline runs and measures; reaching 90% takes the real settings (docs/finetuning.md)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO_ROOT, tiny_configs


def load_script():
    spec = importlib.util.spec_from_file_location("finetune_task", REPO_ROOT / "examples" / "finetune_task.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


task = load_script()


@pytest.fixture(scope="module")
def char_base(tmp_path_factory, shakespeare_data):
    """A 2-step char model over tiny Shakespeare's alphabet, with a context that fits the task."""
    from gptkit.train import train

    out = tmp_path_factory.mktemp("task-base") / "run"
    train(*tiny_configs(shakespeare_data, out, {"block_size": 40}, max_iters=2, eval_interval=2, warmup_iters=1))
    return out / "ckpt.safetensors"


def test_the_task_is_disjoint_words_and_their_capitals():
    words = task.task_words("The king's gentle Queen, and O the KING! gentle thee a be?\nwho whom")
    assert words == ["and", "gentle", "king", "the", "thee", "who", "whom"]  # lowercase, 3..6 letters, distinct
    train, test = task.make_task(words, 4, 2, seed=1)
    assert len(train) == 4 and len(test) == 2
    assert all(e["completion"] == e["prompt"].upper() for e in train + test)
    assert not {e["prompt"] for e in train} & {e["prompt"] for e in test}  # held out: never trained on
    assert task.make_task(words, 4, 2, seed=1) == (train, test)  # the seed decides
    with pytest.raises(ValueError, match="more than the 7 words"):
        task.make_task(words, 6, 2)


def test_exact_match_counts_only_whole_answers(char_base):
    reply = task.answers(char_base, ["gentle"], max_new_tokens=8)[0]
    assert "\n" not in reply and len(reply) <= 8  # cut where the template ends an answer, or at the limit
    score = lambda *completions: task.exact_match(char_base, [{"prompt": "gentle", "completion": c} for c in completions], max_new_tokens=8)
    assert score(reply) == 1.0
    assert score(reply + "X") == score(reply[:-1]) == 0.0
    assert score(reply, "?") == 0.5


def test_the_journey_runs_end_to_end_on_a_tiny_scale(tmp_path, char_base, shakespeare_file, monkeypatch, run_cli, capsys):
    monkeypatch.setenv("GPTKIT_SHAKESPEARE", str(shakespeare_file))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tiny = "--max-iters 2 --batch-size 4 --eval-iters 1"
    results = task.main([
        "--base", str(char_base), "--work", str(tmp_path / "work"), "--train-examples", "40", "--test-examples", "6",
        "--full-options", tiny, "--lora-options", tiny + " --lora-rank 2",
    ])
    assert list(results) == ["base model", "full fine-tuning", "LoRA"]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in results.values())
    assert results["full fine-tuning"]["iterations"] == results["LoRA"]["iterations"] == 2
    assert all(r["seconds"] > 0 for name, r in results.items() if name != "base model")
    table = capsys.readouterr().out
    assert "| LoRA" in table and "held-out words" in table
    test = [json.loads(line) for line in (tmp_path / "work" / "task" / "test.jsonl").read_text().splitlines()]
    trained = {json.loads(line)["prompt"] for line in (tmp_path / "work" / "task" / "train.jsonl").read_text().splitlines()}
    assert len(test) == 6 and not trained & {e["prompt"] for e in test}
    # the fine-tuned checkpoints carry the template, and the scorer answers as `sample --chat` does
    for run in ("full", "lora"):
        ckpt = tmp_path / "work" / run / "ckpt.safetensors"
        r = run_cli("sample", "--ckpt", ckpt, "--chat", test[0]["prompt"], "--temperature", "0", "--max-new-tokens", "16")
        assert r.code == 0, r.output
        assert r.stdout == task.answers(ckpt, [test[0]["prompt"]])[0] + "\n"
