"""The generation engine: cached == recomputed, a row independent of its batch, every sampling control."""

import math

import pytest
import torch

import gptkit.engine
from gptkit.config import COMPONENT_CHOICES
from gptkit.engine import Engine, SamplingParams
from gptkit.errors import GptkitError
from gptkit.model import GPT, ModelConfig
from gptkit.sampling import BatchControls, TextStream, choose, make_generator
from gptkit.tokenizers import CharTokenizer
from gptkit.tokenizers.base import Tokenizer

TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz .,\n")
BLOCK = 16


def tiny_model(**overrides):
    """float64: cached and recomputed logits agree to ~1e-15, so no near tie can flip a token."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=TOK.vocab_size, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32, **overrides)
    model = GPT(config).double().eval()
    with torch.no_grad():  # sharper than an untrained init: texts that differ between seeds and positions
        for p in model.parameters():
            p.mul_(4.0 if p.dim() > 1 else 1.0)
    return model


def recompute(model, prompt, params, context_shift=0):
    """The reference: the whole window through the model at every step, no cache, the same window rule
    (restart at the last BLOCK - context_shift tokens once the text would pass BLOCK) and the same
    sampling function with its own generator."""
    tokens, start = list(prompt), 0
    generator = make_generator(params.seed) if params.temperature > 0 else None
    controls = BatchControls([params], TOK.vocab_size, torch.device("cpu"))
    for _ in range(params.max_new_tokens):
        if len(tokens) - start > BLOCK:
            start = len(tokens) - (BLOCK - context_shift)
        with torch.no_grad():
            logits = model(torch.tensor([tokens[start:]]))[0][:, -1, : TOK.vocab_size].float()
        tokens.append(int(choose(logits, controls, [generator])))
    return tokens[len(prompt) :]


def record_prefills(model):
    """The widths of the prefill passes `model` makes from now on (one list entry per prompt row)."""
    widths, original = [], model.hidden_states

    def hidden_states(idx, cache=None):
        out = original(idx, cache)
        if cache is not None and cache.prefill:
            widths.extend([idx.shape[1]] * idx.shape[0])
        return out

    model.hidden_states = hidden_states
    return widths


VARIANTS = [{kind: choice} for kind, choices in COMPONENT_CHOICES.items() for choice in choices] + [{"tie_embeddings": False}]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_generation_equals_recomputing_the_whole_context(variant, temperature):
    """For every model component: the engine's tokens (prefill, in-place cache, past the 16-token context
    by the sliding window) are exactly those of recomputing every window from scratch."""
    model = tiny_model(**variant)
    engine = Engine(model, TOK, max_batch_size=3)
    prompts = [TOK.encode("the king"), TOK.encode("a"), TOK.encode("my lord, the")]
    params = [SamplingParams(max_new_tokens=40, temperature=temperature, seed=s, stop_at_eot=False) for s in (1, 2, 3)]
    got = engine.generate(prompts, params)
    for prompt, p, completion in zip(prompts, params, got):
        assert completion.token_ids == recompute(model, prompt, p)
        assert completion.finish_reason == "length" and completion.text == TOK.decode(completion.token_ids)


@pytest.mark.parametrize("shift", [3, BLOCK - 1])
def test_the_sliding_window_with_a_shift_re_prefills_less_and_matches_its_rule(shift):
    model = tiny_model(position="rope")
    prompt, params = TOK.encode("the king"), SamplingParams(max_new_tokens=45, temperature=1.0, seed=5, stop_at_eot=False)
    engine = Engine(model, TOK, max_batch_size=1, context_shift=shift)
    prefills = record_prefills(model)
    [completion] = engine.generate([prompt], params)
    del model.hidden_states
    assert completion.token_ids == recompute(model, prompt, params, context_shift=shift)
    # the prompt, then one prefill of BLOCK - shift tokens each time the window restarts
    assert prefills[0] == len(prompt) and set(prefills[1:]) == {BLOCK - shift}
    assert len(prefills) - 1 == math.ceil((len(prompt) + 45 - 1 - BLOCK) / (shift + 1))
    with pytest.raises(GptkitError, match="context_shift must be in 0..15"):
        Engine(model, TOK, context_shift=BLOCK)


def test_a_prompt_gives_the_same_tokens_alone_and_inside_a_changing_batch():
    """Greedy and seeded rows, alone vs. in a batch where other requests of other lengths come and go
    (continuous batching): the same tokens."""
    model = tiny_model()
    greedy = SamplingParams(max_new_tokens=25, temperature=0.0, stop_at_eot=False)
    seeded = SamplingParams(max_new_tokens=25, temperature=0.9, top_k=10, seed=11, stop_at_eot=False)
    prompt = TOK.encode("hello there")
    alone = {name: Engine(model, TOK, max_batch_size=1).generate([prompt], p)[0].token_ids for name, p in [("g", greedy), ("s", seeded)]}

    engine = Engine(model, TOK, max_batch_size=4)
    tokens, rows_seen = {}, set()

    def step():
        for event in engine.step():
            if event.token_id is not None:
                tokens.setdefault(event.request_id, []).append(event.token_id)
        rows_seen.add(sum(r is not None for r in engine.rows))

    engine.add_request(TOK.encode("zz"), SamplingParams(max_new_tokens=3, temperature=1.0, seed=1))
    step()
    step()
    ids = {"g": engine.add_request(prompt, greedy)}
    engine.add_request(TOK.encode("a long other"), SamplingParams(max_new_tokens=30, temperature=1.5))
    step()
    ids["s"] = engine.add_request(prompt, seeded)
    while engine.has_work():
        if len(tokens[ids["g"]]) == 7:
            engine.add_request(TOK.encode("x"), SamplingParams(max_new_tokens=4, temperature=0.0))
        step()
    assert tokens[ids["g"]] == alone["g"] and tokens[ids["s"]] == alone["s"]
    assert max(rows_seen) >= 3  # they really shared the batch


def test_samples_of_one_prompt_share_one_prefill_and_equal_their_runs_alone():
    model = tiny_model()
    prompt = TOK.encode("once upon")
    params = [SamplingParams(max_new_tokens=7, temperature=1.0, seed=s, stop_at_eot=False) for s in range(3)]
    engine = Engine(model, TOK, max_batch_size=3)
    prefills = record_prefills(model)
    together = engine.generate([prompt] * 3, params)
    assert prefills == [len(prompt)]  # one prompt row went through the model, copied into the others
    del model.hidden_states
    alone = [Engine(model, TOK, max_batch_size=1).generate([prompt], p)[0].token_ids for p in params]
    assert [c.token_ids for c in together] == alone
    assert len({tuple(t) for t in alone}) == 3  # different seeds, different samples


def first_greedy(model, prompt, n=30):
    return Engine(model, TOK, max_batch_size=1).generate([prompt], SamplingParams(max_new_tokens=n, temperature=0.0, stop_at_eot=False))[0]


def test_top_k_1_top_p_tiny_and_min_p_1_are_greedy():
    model = tiny_model()
    prompt = TOK.encode("the ")
    greedy = first_greedy(model, prompt).token_ids
    for controls in [dict(top_k=1), dict(top_p=1e-6), dict(min_p=1.0)]:
        params = SamplingParams(max_new_tokens=30, temperature=1.3, seed=4, stop_at_eot=False, **controls)
        assert Engine(model, TOK).generate([prompt], params)[0].token_ids == greedy, controls


def test_top_k_top_p_min_p_keep_only_their_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    def drawn(**controls):
        params = SamplingParams(temperature=1.0, **controls)
        c = BatchControls([params], 4, torch.device("cpu"))
        g = make_generator(0)
        return {int(choose(logits, c, [g])) for _ in range(400)}
    assert drawn() == {0, 1, 2, 3}
    assert drawn(top_k=2) == {0, 1}
    assert drawn(top_p=0.7) == {0, 1}  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7
    assert drawn(top_p=0.85) == {0, 1, 2}
    assert drawn(min_p=0.5) == {0, 1}  # at least 0.25
    assert drawn(top_k=3, min_p=0.2) == {0, 1, 2}


def test_penalties_change_the_greedy_text_as_documented():
    model = tiny_model()
    prompt = TOK.encode("aaaa")
    plain = first_greedy(model, prompt, 20).token_ids
    assert len(set(plain)) < len(plain)  # the untrained model repeats itself
    for controls in [dict(presence_penalty=2.0), dict(frequency_penalty=2.0)]:
        params = SamplingParams(max_new_tokens=20, temperature=0.0, stop_at_eot=False, **controls)
        tokens = Engine(model, TOK).generate([prompt], params)[0].token_ids
        assert tokens != plain
    # a huge repetition penalty: no token of the prompt or of the text so far comes back
    params = SamplingParams(max_new_tokens=15, temperature=0.0, stop_at_eot=False, repetition_penalty=1e9)
    tokens = Engine(model, TOK).generate([prompt], params)[0].token_ids
    assert len(set(tokens)) == 15 and TOK.encode("a")[0] not in tokens
    # the penalised logits themselves
    c = BatchControls([SamplingParams(repetition_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25)], 3, torch.device("cpu"))
    from gptkit.sampling import apply_penalties

    out = apply_penalties(torch.tensor([[2.0, -2.0, 1.0]]), torch.tensor([[True, True, False]]), torch.tensor([[2.0, 0.0, 0.0]]), c)
    assert out.tolist() == [[2.0 / 2 - 0.5 * 2 - 0.25, -4.0, 1.0]]


def test_stop_strings_across_token_boundaries_are_never_emitted():
    model = tiny_model()
    prompt = TOK.encode("the ")
    full = first_greedy(model, prompt, 30).text
    stop = full[10:13]  # three characters: three tokens of the char tokenizer
    cut = full.index(stop)
    engine = Engine(model, TOK)
    events = list(engine.stream(prompt, SamplingParams(max_new_tokens=30, temperature=0.0, stop=("zzzz", stop), stop_at_eot=False)))
    assert "".join(e.text for e in events) == full[:cut]
    assert events[-1].finish_reason == "stop" and len(events) == cut + len(stop)
    assert not engine.has_work()
    texts = [e.text for e in events]
    assert "" in texts  # held back while it could have been the stop string's start


def test_text_stream_holds_partial_characters_and_stop_prefixes():
    class ByteTokenizer(Tokenizer):
        kind, byte_level, vocab_size, eot_id = "bytes", True, 256, None

        def encode_ordinary(self, text):
            return list(text.encode("utf-8"))

        def decode(self, ids):
            return bytes(ids).decode("utf-8", errors="replace")

        def spec(self):
            return {"kind": self.kind}

    tok = ByteTokenizer()
    stream = TextStream(tok, stop=("😀!",))
    pieces = [stream.push(i) for i in tok.encode("é 😀 東😀!tail")]
    assert "".join(pieces) == "é 😀 東" and stream.stopped and not any("\ufffd" in p for p in pieces)
    stream = TextStream(tok, stop=("ab",))
    pieces = [stream.push(i) for i in tok.encode("xa")] + [stream.finish()]
    assert pieces == ["x", "", "a"]  # 'a' held back (it may start 'ab'), released at the end


def test_stop_at_end_of_text_and_max_new_tokens(monkeypatch):
    model = tiny_model()
    calls = []

    def eot_on_third_call(logits, controls, generators, *rest):
        calls.append(1)
        out = choose(logits, controls, generators, *rest)
        return torch.full_like(out, TOK.eot_id) if len(calls) == 3 else out

    monkeypatch.setattr(gptkit.engine, "choose", eot_on_third_call)
    [c] = Engine(model, TOK).generate([TOK.encode("a")], SamplingParams(max_new_tokens=10, temperature=0.0))
    assert c.finish_reason == "stop" and c.token_ids[-1] == TOK.eot_id and len(c.token_ids) == 3
    assert "<|endoftext|>" not in c.text and len(c.text) == 2
    calls.clear()
    [c] = Engine(model, TOK).generate([TOK.encode("a")], SamplingParams(max_new_tokens=4, temperature=0.0, stop_at_eot=False))
    assert c.finish_reason == "length" and len(c.token_ids) == 4 and "<|endoftext|>" in c.text


def test_logprobs_are_the_models_own_with_the_top_alternatives():
    model = tiny_model()
    prompt = TOK.encode("to be")
    params = SamplingParams(max_new_tokens=5, temperature=0.7, seed=3, logprobs=3, stop_at_eot=False)
    [c] = Engine(model, TOK).generate([prompt], params)
    tokens = list(prompt)
    for token, logprob, top in zip(c.token_ids, c.logprobs, c.top_logprobs):
        with torch.no_grad():
            want = torch.log_softmax(model(torch.tensor([tokens]))[0][0, -1, : TOK.vocab_size].float(), -1)
        assert logprob == pytest.approx(float(want[token]), abs=1e-5)
        assert [i for i, _, _ in top] == want.topk(3).indices.tolist()
        assert [text for _, text, _ in top] == [TOK.decode([i]) for i in want.topk(3).indices.tolist()]
        assert [v for _, _, v in top] == pytest.approx(want.topk(3).values.tolist(), abs=1e-5)
        tokens.append(token)
    [c] = Engine(model, TOK).generate([prompt], SamplingParams(max_new_tokens=3, temperature=0.0, logprobs=0))
    assert len(c.logprobs) == 3 and c.top_logprobs is None


def test_cancel_frees_the_row_and_says_so():
    model = tiny_model()
    engine = Engine(model, TOK, max_batch_size=2)
    a = engine.add_request(TOK.encode("ab"), SamplingParams(max_new_tokens=100, temperature=0.0))
    b = engine.add_request(TOK.encode("cd"), SamplingParams(max_new_tokens=100, temperature=0.0))
    waiting = engine.add_request(TOK.encode("ef"), SamplingParams(max_new_tokens=2, temperature=0.0))
    engine.step()
    engine.cancel(a)
    engine.cancel(waiting)
    events = engine.step()
    ended = {e.request_id: e.finish_reason for e in events if e.finish_reason}
    assert ended == {a: "cancelled", waiting: "cancelled"}
    assert [r.id if r else None for r in engine.rows] == [None, b]
    engine.cancel(b)
    engine.step()
    assert not engine.has_work()


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(temperature=-1), "temperature must be >= 0"),
        (dict(top_p=0), "top_p must be in"),
        (dict(top_k=0), "top_k must be >= 1"),
        (dict(min_p=2), "min_p must be in"),
        (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
        (dict(repetition_penalty=0), "repetition_penalty must be > 0"),
        (dict(stop=("",)), "stop must be non-empty"),
        (dict(logprobs=99), "logprobs must be in 0..20"),
    ],
)
def test_bad_params_are_refused_by_name(bad, message):
    with pytest.raises(GptkitError, match=message):
        SamplingParams(**bad).validate()


def test_prompt_errors():
    engine = Engine(tiny_model(), TOK)
    with pytest.raises(GptkitError, match="17 tokens long, longer than the model's context of 16"):
        engine.add_request([1] * 17, SamplingParams())
    with pytest.raises(GptkitError, match="at least one prompt token"):
        engine.add_request([], SamplingParams())


@pytest.mark.parametrize("variant", [{}, {"position": "rope"}])
def test_the_static_decode_step_gives_the_engines_tokens(variant):
    """The fixed-shape decode that CUDA graphs capture (every row, every slot, positions from a device
    buffer), run eagerly on the CPU: the same tokens as the ordinary engine, in a mixed batch."""
    model = tiny_model(**variant)
    prompts = [TOK.encode("the king"), TOK.encode("a"), TOK.encode("my lord, the")]
    params = [SamplingParams(max_new_tokens=30, temperature=t, seed=s, stop_at_eot=False) for t, s in ((0.0, 1), (1.0, 2), (0.8, 3))]
    want = [c.token_ids for c in Engine(model, TOK, max_batch_size=4).generate(prompts, params)]
    static = Engine(model, TOK, max_batch_size=4, static=True, compile=False)
    assert [c.token_ids for c in static.generate(prompts, params)] == want


def test_the_static_decode_step_traces_as_one_graph():
    """torch.compile(fullgraph=True) of the static step: no graph break (a break would make CUDA graphs
    impossible); the 'eager' backend checks the capture without compiling kernels."""
    model = tiny_model(position="rope")
    prompts = [TOK.encode("the king"), TOK.encode("ab")]
    params = SamplingParams(max_new_tokens=6, temperature=0.0, stop_at_eot=False)
    want = [c.token_ids for c in Engine(model, TOK, max_batch_size=2).generate(prompts, params)]
    engine = Engine(model, TOK, max_batch_size=2, static=True, compile="eager")
    assert [c.token_ids for c in engine.generate(prompts, params)] == want
