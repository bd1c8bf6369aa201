import numpy as np
import pytest
import torch

from conftest import tiny_configs
from gptkit.checkpoint import load_checkpoint
from gptkit.errors import GptkitError
from gptkit.launch import resume_config
from gptkit.loader import EpochBatches, RandomBatches, make_loader
from gptkit.shards import Split, write_shard
from gptkit.train import train

T = 8


def make_split(tmp_path, lengths, eot=None, docs_every=None) -> Split:
    """A split of shards holding 0, 1, 2, ... (each token's value is its position in the stream), so a
    window's first token tells where it starts. With `eot`, every `docs_every`-th token is <|endoftext|>."""
    shards, start = [], 0
    for i, n in enumerate(lengths):
        tokens = np.arange(start, start + n, dtype=np.uint32)
        if eot is not None:
            tokens[(tokens % docs_every) == docs_every - 1] = eot
        write_shard(tmp_path / f"train_{i:06d}.bin", tokens)
        shards.append(str(tmp_path / f"train_{i:06d}.bin"))
        start += n
    from gptkit.shards import read_shard

    return Split("train", [read_shard(p) for p in shards])


def starts_of(loader, batches) -> list[int]:
    out = []
    for _ in range(batches):
        x, y = loader.next_batch()
        assert x.shape == y.shape == (loader.batch_size, T) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
        out += x[:, 0].tolist()
    return out


def old_sample_batch(split: Split, batch_size: int, block_size: int, generator) -> tuple:
    """The draw of the removed Split.sample_batch, kept here as the reference: one randint of
    `batch_size` picks over every valid start of every shard, counted shard after shard. Runs trained
    with it must keep drawing the same windows (their resumes stay bitwise)."""
    starts_per_shard = np.array([max(len(s) - block_size, 0) for s in split.shards])
    cumulative = np.cumsum(starts_per_shard)
    picks = torch.randint(int(cumulative[-1]), (batch_size,), generator=generator).numpy()
    shard_of = np.searchsorted(cumulative, picks, side="right")
    offsets = picks - (cumulative[shard_of] - starts_per_shard[shard_of])
    windows = np.stack([split.shards[s][o : o + block_size + 1] for s, o in zip(shard_of, offsets)])
    windows = torch.from_numpy(windows.astype(np.int64))
    return windows[:, :-1], windows[:, 1:]


def test_random_sampler_is_the_old_sample_batch_bit_for_bit(tmp_path):
    split = make_split(tmp_path, [500, 300])
    loader = RandomBatches(split, batch_size=6, block_size=T, seed=7)
    generator = torch.Generator().manual_seed(7)
    for _ in range(5):
        x, y = loader.next_batch()
        x_old, y_old = old_sample_batch(split, 6, T, generator)
        assert torch.equal(x, x_old) and torch.equal(y, y_old)


def test_an_epoch_visits_every_window_once_across_many_shards(tmp_path):
    lengths = [100, 37, 8, 250]  # the 8-token shard is too short for a window of 9
    split = make_split(tmp_path, lengths)
    loader = EpochBatches(split, batch_size=5, block_size=T, seed=3)
    order = loader._epoch_order(0)
    starts = starts_of(loader, (len(order) + 4) // 5)[: len(order)]
    assert sorted(starts) == sorted(set(starts))  # no window twice
    assert starts != sorted(starts)  # shuffled
    shard_begin = np.cumsum([0] + lengths[:-1])
    for s in starts:
        k = np.searchsorted(shard_begin, s, side="right") - 1
        assert s + T + 1 <= shard_begin[k] + lengths[k]  # the window lies inside one shard
    # stride T from one phase: every token predicted once per epoch, except each shard's edges
    phase = min(starts) % T
    assert all((s - shard_begin[np.searchsorted(shard_begin, s, side="right") - 1] - phase) % T == 0 for s in starts)
    covered = sum(T for _ in starts)
    assert covered > sum(lengths) - len(lengths) * 2 * T
    assert loader.epoch == 1 and loader.position == (-len(order)) % 5  # the last batch spilled into epoch 1


def test_epochs_are_deterministic_and_differ(tmp_path):
    split = make_split(tmp_path, [400])
    a = EpochBatches(split, batch_size=4, block_size=T, seed=11)
    b = EpochBatches(split, batch_size=4, block_size=T, seed=11)
    c = EpochBatches(split, batch_size=4, block_size=T, seed=12)
    assert starts_of(a, 10) == starts_of(b, 10) != starts_of(c, 10)
    assert not np.array_equal(a._epoch_order(0), a._epoch_order(1))


def test_ranks_take_disjoint_slices_of_the_global_batch(tmp_path):
    split = make_split(tmp_path, [300, 300])
    for cls in (RandomBatches, EpochBatches):
        whole = cls(split, batch_size=6, block_size=T, seed=5)
        ranks = [cls(split, batch_size=2, block_size=T, seed=5, rank=r, world_size=3) for r in range(3)]
        for _ in range(4):
            x_whole, _ = whole.next_batch()
            parts = [loader.next_batch()[0] for loader in ranks]
            assert torch.equal(torch.cat(parts), x_whole)


def test_position_resumes_exactly(tmp_path):
    split = make_split(tmp_path, [200, 90])
    for sampler in ("random", "epoch"):
        loader = make_loader(sampler, split, batch_size=7, block_size=T, seed=1)
        starts_of(loader, 9)
        position = loader.state_dict()
        expected = starts_of(loader, 12)  # crosses into a further epoch
        fresh = make_loader(sampler, split, batch_size=7, block_size=T, seed=1)
        fresh.load_state_dict(position)
        assert starts_of(fresh, 12) == expected
        if sampler == "epoch":
            first_epoch = len(fresh._epoch_order(0))  # about 290 / 8 windows
            assert position == {"epoch": 1, "position": 9 * 7 - first_epoch}


def test_document_windows_start_right_after_endoftext(tmp_path):
    eot = 1_000_000
    # documents of 19 tokens, each followed by <|endoftext|>; the second shard starts mid-document
    split = make_split(tmp_path, [290, 210], eot=eot, docs_every=20)
    loader = make_loader("documents", split, batch_size=4, block_size=T, seed=0, eot_id=eot)
    starts = [int(s) for s in loader._epoch_order(0)]
    # expected, written out plainly: in each shard, a document starts at the shard's first token and
    # after every <|endoftext|>; its windows start 0, T, 2T, ... tokens in while before its end, and fit
    expected = set()
    for begin, shard in ((0, np.asarray(split.shards[0])), (290, np.asarray(split.shards[1]))):
        doc_starts = [0] + [i + 1 for i, t in enumerate(shard) if t == eot]
        for d in doc_starts:
            end = next((i for i in range(d, len(shard)) if shard[i] == eot), len(shard))
            expected |= {begin + s for s in range(d, end, T) if s + T + 1 <= len(shard)}
    assert sorted(starts) == sorted(expected) and len(starts) == len(set(starts))
    assert {s % 20 for s in starts if s < 280} == {0, 8, 16}  # whole documents: at +0, +8, +16
    assert 290 in starts and 298 in starts  # the piece of a document the second shard starts with
    x, _ = loader.next_batch()
    assert all(int(v) in expected for v in x[:, 0])


def test_documents_need_an_endoftext_token(tmp_path):
    split = make_split(tmp_path, [100])
    with pytest.raises(GptkitError, match="needs an <\\|endoftext\\|> token"):
        make_loader("documents", split, 4, T, 0, eot_id=None)


def test_split_too_short_for_a_window(tmp_path):
    split = make_split(tmp_path, [T])
    with pytest.raises(GptkitError, match="has no window of 9 tokens"):
        EpochBatches(split, 4, T, 0)


@pytest.mark.parametrize("sampler", ["epoch", "documents"])
def test_resume_is_bitwise_exact_with_the_epoch_sampler(tmp_path, tiny_data, sampler):
    straight = tmp_path / "straight"
    train(*tiny_configs(tiny_data, straight, max_iters=12, eval_interval=6, sampler=sampler))
    split_run = tmp_path / "split"
    train(*tiny_configs(tiny_data, split_run, max_iters=6, lr_decay_iters=12, eval_interval=6, sampler=sampler))
    train(*resume_config(split_run, {"max_iters": 12}), resume=True)
    a = load_checkpoint(straight / "ckpt.safetensors").state_dict
    b = load_checkpoint(split_run / "ckpt.safetensors").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_runs_saved_before_the_sampler_setting_resume_with_random_windows(tmp_path, tiny_data):
    """A checkpoint whose config has no `sampler` (gptkit before it existed) drew random windows, and
    resumes with them (the default; were the default to change, resume_config must supply `random`)."""
    from gptkit.checkpoint import save_checkpoint
    from gptkit.run_folder import saved_steps

    out = tmp_path / "run"
    train(*tiny_configs(tiny_data, out, max_iters=4, eval_interval=4, sampler="random"))
    point = saved_steps(out)[0]
    ckpt = load_checkpoint(point.checkpoint)
    older = {k: v for k, v in ckpt.train_config.items() if k != "sampler"}
    save_checkpoint(point.checkpoint, ckpt.build_model(), ckpt.tokenizer_spec, ckpt.step, ckpt.train_loss, ckpt.val_loss, older)
    assert resume_config(out, {})[1].sampler == "random"
    assert resume_config(out, {"sampler": "epoch"})[1].sampler == "epoch"  # unless asked otherwise
