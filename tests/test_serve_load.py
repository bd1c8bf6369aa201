"""`gptkit serve` under load: 100 concurrent requests all answered (200, or 503 when the queue is full),
memory flat over 1,000 requests, a client that leaves stops its generation, a full queue answers 503 with
Retry-After, and SIGTERM lets the requests in flight finish. Tiny model, few tokens: seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx  # noqa: E402

from serve_fixtures import ServerProcess, has_proc, make_serve_checkpoint  # noqa: E402

LONG = 2000  # tokens: far more than a test waits for


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_serve_checkpoint(tmp_path_factory.mktemp("serve-load") / "ckpt.safetensors")


@pytest.fixture(scope="module")
def server(ckpt):
    with ServerProcess(ckpt, "--max-batch-size", "4", "--max-queue", "8", "--max-tokens", str(LONG)) as s:
        yield s


async def _post_all(url: str, bodies: list[dict], concurrency: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        async def post(body):
            async with gate:
                return await http.post("/v1/completions", json=body)

        return await asyncio.gather(*(post(b) for b in bodies))


def test_100_concurrent_requests_are_all_answered(server):
    bodies = [{"prompt": "the king", "max_tokens": 8, "temperature": 1.0, "seed": i} for i in range(100)]
    responses = asyncio.run(_post_all(server.url, bodies, concurrency=100))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 4  # at least a batch's worth got through
    for r in responses:
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "queue_full" and int(r.headers["retry-after"]) >= 1
        else:
            assert r.json()["choices"][0]["finish_reason"] in ("length", "stop")
    assert server.wait_metric("gptkit_running_rows", lambda v: v == 0) == 0
    assert server.metric("gptkit_queue_depth") == 0
    assert server.proc.poll() is None


@pytest.mark.skipif(not has_proc(), reason="reads the server's memory from /proc (Linux)")
def test_memory_is_flat_over_1000_requests(server):
    def bodies(count):
        return [{"prompt": f"request {chr(97 + i % 26)}", "max_tokens": 3, "temperature": 0.8, "seed": i, "stream": i % 3 == 0} for i in range(count)]

    warm = asyncio.run(_post_all(server.url, bodies(100), concurrency=8))
    assert all(r.status_code == 200 for r in warm)
    before = server.rss_bytes()
    responses = asyncio.run(_post_all(server.url, bodies(1000), concurrency=8))
    after = server.rss_bytes()
    assert all(r.status_code == 200 for r in responses)  # 8 clients never overflow 4 slots + 8 queued
    assert after - before <= 50 * 2**20, f"RSS grew {(after - before) / 2**20:.1f} MB over 1,000 requests"


def test_a_streaming_client_that_disconnects_stops_its_generation(server):
    before = server.metric("gptkit_generated_tokens_total")
    body = {"prompt": "a", "max_tokens": LONG, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as response:
        next(response.iter_lines())  # generation has started; now leave
    assert server.wait_metric("gptkit_running_rows", lambda v: v == 0, timeout=20) == 0
    assert server.metric("gptkit_generated_tokens_total") - before < LONG


def test_a_waiting_client_that_disconnects_stops_its_generation(server):
    before = server.metric("gptkit_generated_tokens_total")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json={"prompt": "a", "max_tokens": LONG, "ignore_eos": True}, timeout=httpx.Timeout(60, read=0.5))
    assert server.wait_metric("gptkit_running_rows", lambda v: v == 0, timeout=20) == 0
    assert server.metric("gptkit_generated_tokens_total") - before < LONG


def _hold_a_stream(url: str, started: threading.Event, release: threading.Event, seen: list) -> None:
    body = {"prompt": "a", "max_tokens": LONG, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as response:
        seen.append(response.status_code)
        lines = response.iter_lines()  # kept: a dropped iterator closes the response
        next(lines)
        started.set()
        release.wait(60)


def test_a_full_queue_answers_503_with_retry_after(ckpt):
    with ServerProcess(ckpt, "--max-batch-size", "1", "--max-queue", "0", "--max-tokens", str(LONG)) as server:
        started, release, seen = threading.Event(), threading.Event(), []
        holder = threading.Thread(target=_hold_a_stream, args=(server.url, started, release, seen))
        holder.start()
        try:
            assert started.wait(60), seen
            full = httpx.post(server.url + "/v1/completions", json={"prompt": "b", "max_tokens": 2})
            assert full.status_code == 503, full.text
            assert full.headers["retry-after"].isdigit()
            assert full.json()["error"] == {**full.json()["error"], "type": "service_unavailable", "code": "queue_full"}
        finally:
            release.set()
            holder.join()
        server.wait_metric("gptkit_running_rows", lambda v: v == 0, timeout=20)
        assert httpx.post(server.url + "/v1/completions", json={"prompt": "b", "max_tokens": 2}).status_code == 200


def test_sigterm_finishes_the_requests_in_flight_then_exits(ckpt):
    server = ServerProcess(ckpt, "--max-tokens", "400")
    with server:
        body = {"prompt": "a", "max_tokens": 400, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0}
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120) as response:
            lines = response.iter_lines()
            first = next(lines)
            server.proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line]
        assert first.startswith("data: ") and rest[-1] == "data: [DONE]"
        usage = json.loads(rest[-2][6:])["usage"]
        finish = [json.loads(line[6:])["choices"][0]["finish_reason"] for line in [first, *rest[:-2]]]
        assert finish[-1] == "length" and usage["completion_tokens"] == 400  # it ran to the end
        code = server.proc.wait(timeout=60)
    assert code in (0, -signal.SIGTERM), server.output()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health")


def test_the_serve_benchmark_runs():
    """benchmarks/serve.py with tiny settings, so that the script that measures batching keeps working
    (its timings are printed, never asserted)."""
    import subprocess
    import sys

    from conftest import REPO_ROOT, subprocess_env

    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "serve.py"), "--clients", "1", "2", "--requests", "2", "--max-tokens", "4",
         "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "32", "--device", "cpu", "--json"],
        capture_output=True, text=True, timeout=300, env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert [r["clients"] for r in report["rounds"]] == [1, 2]
    assert [r["tokens"] for r in report["rounds"]] == [8, 16]  # ignore_eos: exactly max_tokens per request
