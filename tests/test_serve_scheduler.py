"""The server's scheduler on the real engine, in process (no HTTP): requests join and leave the running
batch, never more rows than batch slots, a full queue refuses at once, a cancelled job frees its slot, and
what a request gets does not depend on what else runs beside it."""

from __future__ import annotations

import asyncio

import pytest

from serve_fixtures import char_tokenizer, make_serve_checkpoint

from gptkit.serve.scheduler import QueueFull, Scheduler


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from gptkit.engine import Engine

    ckpt = make_serve_checkpoint(tmp_path_factory.mktemp("scheduler") / "ckpt.safetensors")
    return Engine.from_checkpoint(ckpt, device="cpu", dtype="float32", max_batch_size=2)


def _params(**kw):
    from gptkit.engine import SamplingParams

    return SamplingParams(**{"max_new_tokens": 12, "temperature": 0.0, "stop_at_eot": False, **kw})


async def _finish(job) -> dict[int, list[int]]:
    tokens: dict[int, list[int]] = {}
    while not job.done:
        choice, event = await job.next_event()
        if event.token_id is not None:
            tokens.setdefault(choice, []).append(event.token_id)
    return tokens


def test_jobs_share_the_batch_and_get_what_they_would_alone(engine):
    tokenizer = char_tokenizer()
    prompts = [tokenizer.encode_ordinary(p) for p in ("the king", "a", "good night, my lord", "come here")]
    alone = [c.token_ids for c in engine.generate(prompts, _params())]

    async def run():
        scheduler = Scheduler(engine, max_batch_size=2, max_queue=8)
        scheduler.start()
        try:
            most = 0
            jobs = [scheduler.submit([(p, _params())]) for p in prompts[:2]]
            waiting = asyncio.gather(*(_finish(j) for j in jobs))
            await asyncio.sleep(0)
            jobs += [scheduler.submit([(p, _params())]) for p in prompts[2:]]  # join while the first run
            late = asyncio.gather(*(_finish(j) for j in jobs[2:]))
            while not all(j.done for j in jobs):
                most = max(most, scheduler.running)
                await asyncio.sleep(0.001)
            return [r[0] for r in (await waiting) + (await late)], most, scheduler
        finally:
            scheduler.stop()

    results, most, scheduler = asyncio.run(run())
    assert results == alone
    assert 1 <= most <= 2 and scheduler.running == 0 and scheduler.waiting == 0


def test_a_full_queue_refuses_and_a_cancelled_job_frees_its_slot(engine):
    async def run():
        scheduler = Scheduler(engine, max_batch_size=2, max_queue=1)
        scheduler.start()
        try:
            long = _params(max_new_tokens=100_000)
            hog = scheduler.submit([([1], long), ([2], long)])  # both slots
            queued = scheduler.submit([([3], _params())])  # the one queue place
            with pytest.raises(QueueFull) as refused:
                scheduler.submit([([4], _params())])
            assert refused.value.retry_after_s >= 1
            await hog.next_event()  # running
            scheduler.cancel(hog)
            tokens = await asyncio.wait_for(_finish(queued), timeout=60)  # it got a slot
            for _ in range(1000):
                if scheduler.running == 0:
                    break
                await asyncio.sleep(0.005)
            return tokens, scheduler.running, engine.has_work()
        finally:
            scheduler.stop()

    tokens, running, busy = asyncio.run(run())
    assert len(tokens[0]) == 12 and running == 0 and not busy
