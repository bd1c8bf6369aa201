"""Instruction data: templates, the three JSONL layouts, masking, bad lines, over-long examples, batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gptkit.chat_template import DEFAULT_TEMPLATE, apply_template, resolve_template
from gptkit.errors import GptkitError
from gptkit.instruction_data import IGNORE_INDEX, InstructionBatches, InstructionSplit
from gptkit.instructions import prepare_instructions
from gptkit.shards import read_meta
from gptkit.tokenizers import CharTokenizer

CHARS = "abcdefghijklmnopqrstuvwxyzQAS:+0123456789 \n"


@pytest.fixture
def char_tok():
    return CharTokenizer(CHARS)


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def prepare(tmp_path, records, tok, **kwargs):
    kwargs.setdefault("val_fraction", 0.0)
    src = write_jsonl(tmp_path / "ex.jsonl", records)
    meta = prepare_instructions(src, tmp_path / "data", tok, **kwargs)
    return meta, tmp_path / "data"


def test_default_template_renders_a_prompt_for_generation():
    assert apply_template(DEFAULT_TEMPLATE, "2+3") == "Question: 2+3\nAnswer: "
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "again"}]
    assert apply_template(DEFAULT_TEMPLATE, chat) == "be brief\nQuestion: hi\nAnswer: yo\nQuestion: again\nAnswer: "


def test_templates_from_a_line_and_from_files(tmp_path):
    one_line = resolve_template("Q: {prompt}\nA: {completion}\n")
    assert apply_template(one_line, "x") == "Q: x\nA: "
    (tmp_path / "t.json").write_text(json.dumps({"user": "U {content}\n", "assistant": "B {content}\n"}))
    assert apply_template(resolve_template(str(tmp_path / "t.json")), "x") == "U x\nB "
    (tmp_path / "t.toml").write_text('user = "U {content} "\nassistant = "B {content}."\n')
    assert apply_template(resolve_template(str(tmp_path / "t.toml")), "x") == "U x B "
    with pytest.raises(GptkitError, match="exactly one"):
        resolve_template({"user": "no slot", "assistant": "{content}"})
    with pytest.raises(GptkitError, match="neither a template name"):
        resolve_template("nothing/here.json")


def test_prompt_positions_are_masked_and_completion_positions_are_the_next_tokens(tmp_path, char_tok):
    meta, data = prepare(tmp_path, [{"prompt": "2+3", "completion": "5"}], char_tok)
    assert meta["kind"] == "instructions" and meta["template"] == DEFAULT_TEMPLATE
    split = InstructionSplit.open(data, "train")
    x, y = split.rows([0], block_size=32)
    prompt = char_tok.encode("Question: 2+3\nAnswer: ")
    completion = char_tok.encode("5\n") + [char_tok.eot_id]
    tokens = prompt + completion
    n = len(tokens) - 1
    assert x[0, :n].tolist() == tokens[:-1]
    # y[t] predicts tokens[t + 1]: masked while tokens[t + 1] is still prompt, real from the completion on.
    assert y[0, : len(prompt) - 1].tolist() == [IGNORE_INDEX] * (len(prompt) - 1)
    assert y[0, len(prompt) - 1 : n].tolist() == completion
    assert (y[0, n:] == IGNORE_INDEX).all()  # padding


def test_the_loss_ignores_prompt_targets_and_padding(tmp_path, char_tok):
    """Only completion positions reach the loss (its mean is theirs), and changing the padding after the
    example changes neither the loss nor any gradient."""
    from gptkit.model import GPT, ModelConfig

    _, data = prepare(tmp_path, [{"prompt": "ab", "completion": "ba"}, {"prompt": "abc", "completion": "cba"}], char_tok)
    x, y = InstructionSplit.open(data, "train").rows([0, 1], block_size=32)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=char_tok.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=32))

    def loss_and_grads(x):
        model.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = loss_and_grads(x)
    x3 = x.clone()
    for row in range(2):
        end = int((y[row] != IGNORE_INDEX).nonzero().max())  # the last trained position
        x3[row, end + 1 :] = 5  # the padding after the example reads other tokens
    loss3, grads3 = loss_and_grads(x3)
    assert torch.equal(loss, loss3) and all(torch.equal(a, b) for a, b in zip(grads, grads3))
    # The loss is the mean over completion tokens only.
    logits, _ = model(x)
    keep = y != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[keep], y[keep])
    assert torch.allclose(loss, manual)


def test_the_three_layouts_give_the_same_tokens(tmp_path, char_tok):
    records = [
        {"prompt": "reverse ab", "completion": "ba"},
        {"messages": [{"role": "user", "content": "reverse ab"}, {"role": "assistant", "content": "ba"}]},
        {"instruction": "reverse", "input": "ab", "output": "ba"},
        {"instruction": "reverse ab", "output": "ba"},
    ]
    _, data = prepare(tmp_path, records, char_tok)
    split = InstructionSplit.open(data, "train")
    x, y = split.rows(range(4), 32)
    assert torch.equal(x[0], x[1]) and torch.equal(y[0], y[1]) and torch.equal(x[0], x[3])
    # Alpaca puts the input on its own line after the instruction
    assert char_tok.decode(x[2][: split.examples[2, 1] - 1].tolist()).startswith("Question: reverse\nab\nAnswer: ba")


def test_multi_turn_trains_every_assistant_message(tmp_path, char_tok):
    chat = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    _, data = prepare(tmp_path, [chat], char_tok)
    x, y = InstructionSplit.open(data, "train").rows([0], 64)
    trained = [t for t in y[0].tolist() if t != IGNORE_INDEX]
    eot = char_tok.eot_id
    assert trained == char_tok.encode("b\n") + [eot] + char_tok.encode("d\n") + [eot]


@pytest.mark.parametrize(
    "line, fault",
    [
        ('{"prompt": "a", "completion": "b"', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"question": "a", "answer": "b"}', "no known layout"),
        ('{"prompt": 3, "completion": "b"}', '"prompt" must be a string'),
        ('{"messages": [{"role": "bot", "content": "b"}]}', "unknown role 'bot'"),
        ('{"messages": [{"role": "assistant", "content": "b"}, {"role": "user", "content": "a"}]}', "must be the assistant's"),
        ('{"messages": []}', "non-empty list"),
    ],
)
def test_a_malformed_line_names_the_file_and_line(tmp_path, char_tok, line, fault):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "b"}, "", line])
    with pytest.raises(GptkitError) as e:
        prepare_instructions(src, tmp_path / "data", char_tok)
    assert f"{src}, line 3: " in e.value.message and fault in e.value.message
    assert not (tmp_path / "data").exists()


def test_an_unencodable_character_names_the_line(tmp_path, char_tok):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": "#"}])
    with pytest.raises(GptkitError, match=r"line 2: "):
        prepare_instructions(src, tmp_path / "data", char_tok, val_fraction=0.0)


def test_empty_completions_and_unknown_keys_are_counted(tmp_path, char_tok):
    records = [{"prompt": "a", "completion": "b", "id": 1}, {"prompt": "a", "completion": "  "}, {"prompt": "c", "completion": "d", "id": 2}]
    meta, data = prepare(tmp_path, records, char_tok)
    assert meta["skipped"] == {"empty_completion": 1}
    assert meta["ignored_keys"] == {"id": 2}
    assert meta["splits"]["train"]["examples"] == 2


def test_over_long_examples_are_skipped_and_counted_or_refused(tmp_path, char_tok):
    long = {"prompt": "a" * 40, "completion": "b"}
    short = {"prompt": "a", "completion": "b"}
    meta, data = prepare(tmp_path, [short, long, short], char_tok, block_size=24)
    assert meta["skipped"] == {"too_long": 1} and meta["splits"]["train"]["examples"] == 2
    assert meta["block_size"] == 24 and meta["longest_example"] <= 25
    with pytest.raises(GptkitError, match=r"line 2: the example has 62 tokens"):
        prepare(tmp_path, [short, long], char_tok, block_size=24, on_too_long="error")
    # An example exactly block_size + 1 long fits: the model reads block_size of its tokens.
    exact = {"prompt": "a" * 14, "completion": "b"}  # 10 + 14 + 1 + 8 + 2 ("b\n") + eot = 36 tokens
    meta, data = prepare(tmp_path, [exact], char_tok, block_size=35)
    assert meta["splits"]["train"]["examples"] == 1
    # A loader with a shorter context than the data was prepared for refuses, naming the fix.
    with pytest.raises(GptkitError, match="--block-size 20"):
        InstructionBatches(InstructionSplit.open(data, "train"), 2, 20, seed=0)


def test_no_example_fits(tmp_path, char_tok):
    with pytest.raises(GptkitError, match="no training example fits"):
        prepare(tmp_path, [{"prompt": "a" * 40, "completion": "b"}], char_tok, block_size=8)


def test_validation_split_and_evaluation_iterator(tmp_path, char_tok):
    records = [{"prompt": f"{i}", "completion": f"{i}{i}"} for i in range(10)]
    meta, data = prepare(tmp_path, records, char_tok, val_fraction=0.2)
    assert (meta["splits"]["train"]["examples"], meta["splits"]["val"]["examples"]) == (8, 2)
    val = InstructionSplit.open(data, "val")
    batches = list(val.iter_batches(batch_size=3, block_size=32))
    assert len(batches) == 1 and batches[0][0].shape == (2, 32)
    assert char_tok.decode(batches[0][0][1].tolist()).startswith("Question: 9\nAnswer: 99")
    assert read_meta(data)["splits"]["val"]["trained_tokens"] == 2 * 4


def test_batches_cover_each_example_once_per_epoch_split_across_ranks_and_resume(tmp_path, char_tok):
    records = [{"prompt": f"{i}", "completion": f"{i}"} for i in range(10)]
    _, data = prepare(tmp_path, records, char_tok)
    split = InstructionSplit.open(data, "train")
    whole = InstructionBatches(split, batch_size=4, block_size=32, seed=7)
    ranks = [InstructionBatches(split, batch_size=2, block_size=32, seed=7, rank=r, world_size=2) for r in range(2)]
    firsts = []
    for _ in range(5):  # two epochs of 10 examples
        x, y = whole.next_batch()
        parts = [b.next_batch() for b in ranks]
        assert torch.equal(x, torch.cat([p[0] for p in parts])) and torch.equal(y, torch.cat([p[1] for p in parts]))
        firsts.extend(x[:, 10].tolist())  # the digit of "Question: N"
    assert sorted(firsts[:10]) == sorted(char_tok.encode("0123456789"))
    # resume: the state is two integers; a new loader continues exactly where the old one was
    rng, extra = {}, {}
    whole.save_state(rng, extra)
    expected = whole.next_batch()
    again = InstructionBatches(split, batch_size=4, block_size=32, seed=7)
    again.load_state(rng, json.loads(json.dumps(extra)))
    assert all(torch.equal(a, b) for a, b in zip(again.next_batch(), expected))


def test_plain_text_data_is_not_instruction_data(tmp_path, tiny_data):
    with pytest.raises(GptkitError, match="not instruction data"):
        InstructionSplit.open(tiny_data, "train")


def test_prepare_instructions_cli(tmp_path, run_cli, char_tok):
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    char_tok.save(tok_dir)
    src = write_jsonl(tmp_path / "ex.jsonl", [{"prompt": "a", "completion": "b"}] * 3)
    result = run_cli("prepare", "instructions", src, "--tokenizer", tok_dir, "--out", tmp_path / "d", "--template", "Q: {prompt}\nA: {completion}\n")
    assert result.code == 0, result.output
    meta = read_meta(tmp_path / "d")
    assert meta["template"]["assistant"] == "\nA: {content}\n" and meta["kind"] == "instructions"
    bad = write_jsonl(tmp_path / "bad.jsonl", ["{oops"])
    result = run_cli("prepare", "instructions", bad, "--tokenizer", tok_dir, "--out", tmp_path / "d2")
    assert result.code == 1 and "line 1" in result.stderr and "Traceback" not in result.output
    assert np.load(tmp_path / "d" / "train_trained.npy", allow_pickle=False).dtype == np.uint8


def test_rows_are_as_wide_as_the_longest_example_when_the_context_is_wider():
    from gptkit.instruction_data import row_width

    assert row_width({"longest_example": 30}, 64) == 29  # 30 tokens: 29 inputs, 29 targets
    assert row_width({"longest_example": 65}, 64) == 64  # as wide as the context, never wider
    assert row_width({}, 64) == 64  # a folder that does not say: the context
