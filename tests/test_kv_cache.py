"""The preallocated KV cache: rows of their own lengths, written in place, masks from positions."""

import pytest
import torch

from gptkit.kv_cache import KVCache, attention_mask
from gptkit.model import GPT, ModelConfig

VOCAB = 50


def tiny_model(**overrides):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0, **overrides)
    return GPT(config).double().eval()


def ids(n, seed):
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_attention_mask_is_causal_by_position_with_window_and_validity():
    q = torch.tensor([[2], [4]])  # two rows, one query each, at positions 2 and 4
    k = torch.arange(6)[None, :]
    mask = attention_mask(q, k)
    assert mask.shape == (2, 1, 1, 6)
    assert mask[0, 0, 0].tolist() == [True, True, True, False, False, False]
    assert mask[1, 0, 0].tolist() == [True] * 5 + [False]
    assert attention_mask(q, k, window=2)[1, 0, 0].tolist() == [False, False, False, True, True, False]
    valid = torch.tensor([[True] * 6, [False, True, True, True, True, True]])
    assert attention_mask(q, k, valid)[1, 0, 0].tolist() == [False] + [True] * 4 + [False]


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_rows_of_different_lengths_decode_as_if_alone(position):
    """Two prompts of lengths 3 and 7 prefilled in one padded pass, then decoded together (each at its
    own position): every logit equals that of the same row run alone through the uncached model."""
    model = tiny_model(position=position)
    prompts = [ids(3, 1), ids(7, 2)]
    cache = KVCache(model.config.n_layer, batch_size=2)
    padded = torch.tensor([p + [0] * (7 - len(p)) for p in prompts])
    with torch.no_grad():
        logits, _ = model(padded, cache=cache.rows([0, 1], [3, 7]))
        assert cache.lengths == [3, 7]
        sequences = [list(p) for p in prompts]
        for step in range(5):
            for row, seq in enumerate(sequences):
                last = len(seq) - 1 if step > 0 else len(prompts[row]) - 1
                got = logits[row, 0 if step > 0 else last]
                want = model(torch.tensor([seq]))[0][0, -1]
                torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
                seq.append(int(want.argmax()))
            logits, _ = model(torch.tensor([[s[-1]] for s in sequences]), cache=cache)
        assert cache.lengths == [8, 12]


def test_a_subset_of_rows_and_copied_rows():
    """A prefill into row 2 only, copied into rows 0 and 1: all three decode the same logits, in place."""
    model = tiny_model()
    prompt = ids(5, 3)
    cache = KVCache(model.config.n_layer, batch_size=3)
    with torch.no_grad():
        first, _ = model(torch.tensor([prompt]), cache=cache.rows([2]))
        storage = cache.keys[0].data_ptr()
        cache.copy_row(2, [0, 1])
        assert cache.lengths == [5, 5, 5]
        nxt = int(first[0, -1].argmax())
        logits, _ = model(torch.tensor([[nxt]] * 3), cache=cache)
        want = model(torch.tensor([prompt + [nxt]]))[0][0, -1]
    for row in range(3):
        torch.testing.assert_close(logits[row, 0], want, rtol=0, atol=1e-10)
    assert cache.keys[0].data_ptr() == storage  # written in place, never reallocated
    assert cache.keys[0].shape == (3, 2, 16, 16)  # (B_max, H_kv, block_size, D)


def test_a_reset_row_takes_a_new_prompt():
    model = tiny_model()
    cache = KVCache(model.config.n_layer, batch_size=2)
    with torch.no_grad():
        model(torch.tensor([ids(6, 4), ids(6, 5)]), cache=cache)
        cache.reset(1)
        fresh = ids(4, 6)
        got, _ = model(torch.tensor([fresh]), cache=cache.rows([1]))
        assert cache.lengths == [6, 4]
        want, _ = model(torch.tensor([fresh]))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_scattered_rows_decode_at_one_position_and_at_their_own():
    """Rows 0 and 2 of 3 (not a slice of the cache: index, then gather), first at one position, then at
    positions of their own: every logit equals the uncached model's, and row 1 is never touched."""
    model = tiny_model()
    cache = KVCache(model.config.n_layer, batch_size=3)
    prompts = {0: ids(4, 7), 2: ids(4, 8)}
    with torch.no_grad():
        model(torch.tensor([prompts[0], ids(2, 9) + [0, 0], prompts[2]]), cache=cache.rows([0, 1, 2], [4, 2, 4]))
        untouched = cache.keys[0][1].clone()
        for extra in ([[5], [6]], [[7], [8]]):
            logits, _ = model(torch.tensor(extra), cache=cache.rows([0, 2]))
            for i, row in enumerate((0, 2)):
                prompts[row] = prompts[row] + extra[i]
                want = model(torch.tensor([prompts[row]]))[0][0, -1]
                torch.testing.assert_close(logits[i, 0], want, rtol=0, atol=1e-10)
            if extra == [[5], [6]]:  # row 2 one position ahead from now on: positions of their own
                model(torch.tensor([[9]]), cache=cache.rows([2]))
                prompts[2] = prompts[2] + [9]
        assert cache.lengths == [6, 2, 7]
        assert torch.equal(cache.keys[0][1], untouched)
