"""A real `gptkit serve` process for the server tests: a tiny random checkpoint, a free loopback port, and
helpers to wait for it, read its metrics and its memory.

    ckpt = make_serve_checkpoint(tmp / "ckpt.safetensors", chat_template=DEFAULT_TEMPLATE)
    with ServerProcess(ckpt, "--max-batch-size", "4") as server:
        httpx.post(server.url + "/v1/completions", json={...})
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import subprocess_env
from export_fixtures import make_checkpoint

CORPUS_CHARS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ:?!.,\n"


def char_tokenizer():
    from gptkit.tokenizers import build_tokenizer

    return build_tokenizer("char", CORPUS_CHARS)


def make_serve_checkpoint(path: Path, chat_template: dict | None = None, seed: int = 0) -> Path:
    """A 2-layer random model with a char tokenizer (block_size 128); `chat_template` is recorded in the
    checkpoint's metadata under "chat_template", as a fine-tuned checkpoint records it."""
    make_checkpoint(path, char_tokenizer(), seed=seed)
    if chat_template is not None:
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(path), "pt") as f:
            metadata = dict(f.metadata())
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        metadata["chat_template"] = json.dumps(chat_template)  # the checksum covers the weights only
        save_file(tensors, str(path), metadata=metadata)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m gptkit serve --ckpt CKPT --port P ARGS...` on loopback, ready (GET /health 200) on enter."""

    def __init__(self, ckpt: Path, *args: str, api_key: str | None = None, startup_timeout: float = 120):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        command = [sys.executable, "-m", "gptkit", "serve", "--ckpt", str(ckpt), "--port", str(self.port), "--device", "cpu", *args]
        if api_key:
            command += ["--api-key", api_key]
        self.log_path = Path(ckpt).with_suffix(f".{self.port}.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(command, env=subprocess_env(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.startup_timeout = startup_timeout

    def __enter__(self) -> ServerProcess:
        self.wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gptkit serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gptkit serve was not ready within {self.startup_timeout} s:\n{self.output()}")

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str) -> float:
        """One unlabelled sample of /metrics."""
        text = httpx.get(self.url + "/metrics", headers=self.headers, timeout=10).text
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert match, f"{name} is not in /metrics:\n{text}"
        return float(match.group(1))

    def wait_metric(self, name: str, predicate, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while True:
            value = self.metric(name)
            if predicate(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.02)

    def rss_bytes(self) -> int:
        """The server's resident memory (Linux: /proc/PID/status)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def greedy_text(ckpt: Path, prompt: str, max_tokens: int) -> str:
    """What greedy decoding must write: the textbook loop (gptkit.generate), ended at <|endoftext|>."""
    from export_fixtures import gptkit_greedy

    tokenizer = char_tokenizer()
    ids = gptkit_greedy(ckpt, tokenizer.encode_ordinary(prompt), max_tokens)
    if tokenizer.eot_id in ids:
        ids = ids[: ids.index(tokenizer.eot_id)]
    return tokenizer.decode(ids)


def has_proc() -> bool:
    return os.path.exists("/proc/self/status")
