import pytest
import torch

from gptkit.checkpoint import load_checkpoint
from gptkit.errors import GptkitError
from gptkit.generate import decode_stream, encode_prompt, generate, next_token, sample_texts
from gptkit.model import GPT, ModelConfig
from gptkit.tokenizers import CharTokenizer
from gptkit.tokenizers.base import Tokenizer


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The tiny run's model in float64 (cached and uncached logits then agree to ~1e-15, so argmax
    comparisons cannot flip on a near tie) and its tokenizer."""
    ckpt = load_checkpoint(tiny_run.ckpt)
    return ckpt.build_model().double().eval(), ckpt.tokenizer()


def reference_greedy(model, prompt_ids, n):
    """Greedy decoding the slow, obvious way: the whole (cropped) sequence through the model, no cache."""
    tokens = list(prompt_ids)
    block = model.config.block_size
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([tokens[-block:]]))
            tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt_ids) :]


def test_greedy_equals_argmax_without_cache_past_the_context(trained):
    model, tok = trained
    prompt = tok.encode("the king ")
    n = 3 * model.config.block_size  # well past the 16-token context: the cache is rebuilt twice
    got = list(generate(model, prompt, n, temperature=0.0))
    assert len(got) == n
    assert got == reference_greedy(model, prompt, n)
    assert list(generate(model, prompt, n, temperature=0.0)) == got  # deterministic


def test_top_k_1_equals_greedy(trained):
    model, tok = trained
    prompt = tok.encode("my lord")
    greedy = list(generate(model, prompt, 20, temperature=0.0))
    for temperature in (0.5, 1.0, 5.0):
        assert list(generate(model, prompt, 20, temperature, top_k=1, generator=torch.Generator().manual_seed(3))) == greedy


def test_same_seed_same_tokens_different_seed_different(trained):
    model, tok = trained
    prompt = tok.encode("\n")

    def draw(seed):
        return list(generate(model, prompt, 40, temperature=1.0, top_k=None, generator=torch.Generator().manual_seed(seed)))

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)


def test_stop_id_ends_generation(trained):
    model, tok = trained
    prompt = tok.encode("the ")
    first = next(generate(model, prompt, 5, temperature=0.0))
    assert list(generate(model, prompt, 5, temperature=0.0, stop_id=first)) == [first]


def test_generate_needs_a_prompt(trained):
    with pytest.raises(ValueError, match="at least one prompt token"):
        list(generate(trained[0], [], 3))


def test_next_token_top_k_and_temperature():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 2.5]])
    assert next_token(logits, 0.0, None, None).tolist() == [[3]]
    generator = torch.Generator().manual_seed(0)
    drawn = {int(next_token(logits, 1.0, 2, generator)) for _ in range(300)}
    assert drawn == {3, 4}  # only the two likeliest
    drawn = {int(next_token(logits, 1.0, None, generator)) for _ in range(300)}
    assert drawn == {0, 1, 2, 3, 4}
    # a very low temperature is (almost) greedy
    assert {int(next_token(logits, 1e-3, None, generator)) for _ in range(50)} == {3}


def test_generation_never_draws_a_padded_id():
    """A padded model rigged so that a padded id has the largest logit at every position: sampling
    still draws real tokens only, greedy or not, with or without top-k."""
    vocab = 67
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=vocab, vocab_multiple=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():
        # The final norm now outputs the all-ones vector whatever it is given, and every padded row is
        # all ones too: a padded id's logit is 32, a real token's about 0 (a sum of 32 small weights).
        model.final_norm.weight.zero_()
        model.final_norm.bias.fill_(1.0)
        model.token_embedding.weight[vocab:] = 1.0
        logits, _ = model(torch.tensor([[1, 2, 3]]))
    assert logits.shape[-1] == 128 and (logits.argmax(dim=-1) >= vocab).all()  # unmasked, padding would win
    for temperature, top_k in [(0.0, None), (1.0, None), (1.0, 5), (2.0, 100)]:
        ids = list(generate(model, [1, 2, 3], 40, temperature, top_k, torch.Generator().manual_seed(0)))
        assert len(ids) == 40 and max(ids) < vocab, (temperature, top_k)


# --- sample_texts: the library behind `gptkit sample` ---------------------------------------------------


def sample(ckpt, **kwargs):
    kwargs.setdefault("device", "cpu")
    return [(prompt, "".join(pieces)) for prompt, pieces in sample_texts(ckpt, **kwargs)]


def test_sample_texts_seeded_is_reproducible(tiny_run):
    a = sample(tiny_run.ckpt, prompt="The ", num_samples=2, max_new_tokens=30, temperature=1.0, seed=7)
    b = sample(tiny_run.ckpt, prompt="The ", num_samples=2, max_new_tokens=30, temperature=1.0, seed=7)
    c = sample(tiny_run.ckpt, prompt="The ", num_samples=2, max_new_tokens=30, temperature=1.0, seed=8)
    assert a == b and a != c
    assert [p for p, _ in a] == ["The ", "The "]
    assert a[0][1] != a[1][1]  # the samples of one call differ from each other
    vocab = set(load_checkpoint(tiny_run.ckpt).tokenizer_spec["chars"])
    assert all(set(text) <= vocab for _, text in a)


def test_sample_texts_greedy_past_the_context(tiny_run):
    [(prompt, text)] = sample(tiny_run.ckpt, prompt="Come", max_new_tokens=50, temperature=0.0, stop_at_eot=False)
    assert prompt == "Come" and len(text) == 50  # char tokenizer: one character per token
    ckpt = load_checkpoint(tiny_run.ckpt)
    tok = ckpt.tokenizer()
    assert text == tok.decode(list(generate(ckpt.build_model(), tok.encode("Come"), 50, temperature=0.0)))


def test_sample_texts_without_prompt_starts_from_a_newline(tiny_run):
    [(prompt, text)] = sample(tiny_run.ckpt, prompt=None, max_new_tokens=5, seed=1)
    assert prompt == "" and 0 < len(text) <= 5


def test_sample_texts_stops_at_eot_and_hides_it(tiny_run, monkeypatch):
    eot = load_checkpoint(tiny_run.ckpt).tokenizer().eot_id
    import gptkit.engine  # sample_texts runs on the engine, which picks tokens with engine.choose

    monkeypatch.setattr(gptkit.engine, "choose", lambda logits, *args: torch.full((logits.size(0), 1), eot))
    assert sample(tiny_run.ckpt, prompt="a", max_new_tokens=5) == [("a", "")]
    assert sample(tiny_run.ckpt, prompt="a", max_new_tokens=3, stop_at_eot=False) == [("a", "<|endoftext|>" * 3)]


def test_prompt_errors(tiny_run):
    with pytest.raises(GptkitError, match="prompt is 17 tokens long, longer than the model's context of 16"):
        sample(tiny_run.ckpt, prompt="the king the king", max_new_tokens=1)
    with pytest.raises(GptkitError, match="outside this char tokenizer's vocabulary: '€'"):
        sample(tiny_run.ckpt, prompt="the €", max_new_tokens=1)
    with pytest.raises(GptkitError, match="--temperature must be >= 0"):
        sample(tiny_run.ckpt, prompt="the", temperature=-1.0)


def test_encode_prompt_defaults():
    tok = CharTokenizer("\nab")
    assert encode_prompt(tok, None, 16) == ("", [0])  # a newline, as nanoGPT starts
    assert encode_prompt(tok, "", 16) == ("", [0])
    no_newline = CharTokenizer("ab")
    assert encode_prompt(no_newline, None, 16) == ("", [no_newline.eot_id])
    assert encode_prompt(tok, "ab", 2) == ("ab", [1, 2])
    with pytest.raises(GptkitError, match="3 tokens long"):
        encode_prompt(tok, "aba", 2)


# --- decode_stream ---------------------------------------------------------------------------------------


class ByteTokenizer(Tokenizer):
    """One token per UTF-8 byte: a multi-byte character spans several tokens, as in byte-level BPE."""

    kind = "bytes"
    byte_level = True
    vocab_size = 256
    eot_id = None

    def encode_ordinary(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")

    def spec(self):
        return {"kind": self.kind}


def test_decode_stream_holds_back_partial_characters():
    tok = ByteTokenizer()
    text = "é 😀 東京!"
    pieces = list(decode_stream(tok, iter(tok.encode(text))))
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert "😀" in pieces and "東" in pieces  # each whole, once all its bytes arrived
    assert len(pieces) == len(text)


def test_decode_stream_gives_up_on_invalid_bytes():
    tok = ByteTokenizer()
    pieces = list(decode_stream(tok, iter([0xFF] * 10 + [ord("a")])))
    assert "".join(pieces) == "\ufffd" * 10 + "a"
    assert len(pieces[0]) == 8  # never waits for more than 8 tokens


def test_decode_stream_flushes_an_unfinished_tail():
    tok = ByteTokenizer()
    pieces = list(decode_stream(tok, iter(tok.encode("ok") + tok.encode("😀")[:2])))
    assert pieces == ["o", "k", "\ufffd"]
