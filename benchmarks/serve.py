"""Benchmark: what continuous batching buys `gptkit serve`: total generated tokens/s with 1, 4 and 16
concurrent clients, in one run against one server.

    python benchmarks/serve.py                           # CPU: the 0.8M-parameter CPU preset's shape, random weights
    python benchmarks/serve.py --ckpt out/ckpt.safetensors --device cuda --clients 1 4 16 64
    python benchmarks/serve.py --json                    # one JSON object on stdout

It starts `gptkit serve` as a child process (a free loopback port, --max-batch-size the largest client
count), warms it up, then for each client count runs that many clients at once, each sending
--requests requests one after another (/v1/completions, --max-tokens new tokens, ignore_eos so each
request writes exactly that many, sampled at temperature 1 with its own seed). Tokens/s is the sum of
the responses' usage.completion_tokens over the wall time of the round; latency is per request.

The check: batching gives at least 3x the tokens/s at 16 clients that one client at a time gets (exit
code 1 otherwise). Figures from a shared, busy machine are noisy: run it twice before believing one.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHARS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ:;?!.,'-\n"


def make_checkpoint(path: Path, n_layer: int, n_embd: int, n_head: int, block_size: int) -> Path:
    import torch

    from gptkit.checkpoint import save_checkpoint
    from gptkit.model import GPT, ModelConfig
    from gptkit.tokenizers import build_tokenizer

    tokenizer = build_tokenizer("char", CHARS)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=block_size, dropout=0.0))
    save_checkpoint(path, model, tokenizer.spec(), step=0)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, ckpt: Path, log) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    command = [
        sys.executable, "-m", "gptkit", "serve", "--ckpt", str(ckpt), "--port", str(port), "--device", args.device,
        "--dtype", args.dtype, "--max-batch-size", str(max(args.clients)), "--max-queue", str(4 * max(args.clients)),
        "--max-tokens", str(args.max_tokens), "--log-level", "warning",
    ]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gptkit serve exited with {proc.returncode}; see {log.name}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("gptkit serve did not become ready in 300 s")


def run_round(url: str, clients: int, requests: int, max_tokens: int, seed0: int) -> dict:
    """`clients` threads, each sending `requests` requests in sequence; returns tokens/s and latencies."""
    import httpx

    tokens, latencies, errors = [0] * clients, [], []
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            for r in range(requests):
                body = {"prompt": "ROMEO:", "max_tokens": max_tokens, "temperature": 1.0, "ignore_eos": True, "seed": seed0 + c * requests + r}
                start = time.perf_counter()
                response = http.post("/v1/completions", json=body)
                elapsed = time.perf_counter() - start
                if response.status_code != 200:
                    with lock:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                tokens[c] += response.json()["usage"]["completion_tokens"]
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} request(s) failed with {clients} clients, e.g. {errors[0]}")
    return {
        "clients": clients, "requests": clients * requests, "tokens": sum(tokens), "seconds": round(wall, 3),
        "tokens_per_s": round(sum(tokens) / wall, 1), "latency_s_median": round(statistics.median(latencies), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, help="serve this checkpoint (default: a random model of the CPU preset's shape)")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=4, help="requests per client per round")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt or make_checkpoint(Path(tmp) / "bench.safetensors", args.n_layer, args.n_embd, args.n_head, args.block_size)
        with open(Path(tmp) / "server.log", "w") as log:
            proc, url = start_server(args, ckpt, log)
            try:
                run_round(url, max(args.clients), 1, min(8, args.max_tokens), seed0=10_000)  # warm-up, not timed
                rounds = [run_round(url, clients, args.requests, args.max_tokens, seed0=1000 * i) for i, clients in enumerate(args.clients)]
            finally:
                proc.terminate()
                proc.wait(timeout=120)

    base = rounds[0]["tokens_per_s"]
    for r in rounds:
        r["speedup"] = round(r["tokens_per_s"] / base, 2)
    checks = {}
    if 1 in args.clients and 16 in args.clients:
        at16 = next(r for r in rounds if r["clients"] == 16)["tokens_per_s"]
        at1 = next(r for r in rounds if r["clients"] == 1)["tokens_per_s"]
        checks[">= 3x tokens/s at 16 clients than at 1"] = at16 >= 3 * at1
    if args.json:
        print(json.dumps({"device": args.device, "max_tokens": args.max_tokens, "rounds": rounds, "checks": checks}))
    else:
        print(f"gptkit serve, {args.max_tokens} new tokens per request, {args.requests} requests per client (device {args.device})")
        print("| clients | requests | tokens | seconds | tokens/s | median latency (s) | vs 1 client |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rounds:
            print(f"| {r['clients']} | {r['requests']} | {r['tokens']} | {r['seconds']} | {r['tokens_per_s']} | {r['latency_s_median']} | {r['speedup']}x |")
        for name, ok in checks.items():
            print(f"{'ok' if ok else 'FAILED'}: {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
