"""`gptkit serve` through the official `openai` client and raw HTTP: completions and chat, whole and
streamed, the sampling controls, and every refusal in OpenAI's error shape.

One server process for the module (a tiny random model whose checkpoint records a chat template);
a second one with an API key, on a checkpoint without a template.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
import httpx  # noqa: E402

from serve_fixtures import ServerProcess, greedy_text, make_serve_checkpoint  # noqa: E402

from gptkit.chat_template import DEFAULT_TEMPLATE, apply_template  # noqa: E402

MODEL = "ckpt"  # the served name: the checkpoint's file name


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_serve_checkpoint(tmp_path_factory.mktemp("serve") / "ckpt.safetensors", chat_template=DEFAULT_TEMPLATE)


@pytest.fixture(scope="module")
def server(ckpt):
    with ServerProcess(ckpt, "--max-tokens", "64", "--max-n", "4", "--max-body-bytes", "20000", "--max-prompt-tokens", "100") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_greedy_completion_is_the_textbook_loops_text(client, ckpt):
    result = client.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=20, temperature=0)
    expected = greedy_text(ckpt, "ROMEO:", 20)
    choice = result.choices[0]
    assert choice.text == expected
    assert result.object == "text_completion" and result.model == MODEL
    assert result.usage.prompt_tokens == len("ROMEO:")
    if choice.finish_reason == "length":
        assert result.usage.completion_tokens == 20
    else:  # ended at <|endoftext|>
        assert result.usage.completion_tokens <= 20
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert choice.finish_reason in ("length", "stop")


def test_streamed_completion_has_the_same_text(client):
    whole = client.completions.create(model=MODEL, prompt="the king", max_tokens=24, temperature=0)
    stream = client.completions.create(
        model=MODEL, prompt="the king", max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_a_stream_ends_with_done(server):
    body = {"model": MODEL, "prompt": "a", "max_tokens": 5, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    json.loads(lines[0][6:])  # each event is one JSON chunk


def test_chat_uses_the_checkpoints_template(client, ckpt):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "who are you?"}]
    result = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0)
    prompt = apply_template(DEFAULT_TEMPLATE, messages)
    expected = greedy_text(ckpt, prompt, 16).split("\nQuestion: ")[0]  # the next user turn ends the answer
    choice = result.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected
    assert result.object == "chat.completion" and result.usage.prompt_tokens == len(prompt)
    streamed = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0, stream=True)
    chunks = list(streamed)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason


def test_n_choices_and_seed(client):
    first = client.completions.create(model=MODEL, prompt="good night", max_tokens=12, temperature=1.0, n=3, seed=7)
    again = client.completions.create(model=MODEL, prompt="good night", max_tokens=12, temperature=1.0, n=3, seed=7)
    assert sorted(c.index for c in first.choices) == [0, 1, 2]
    texts = [c.text for c in sorted(first.choices, key=lambda c: c.index)]
    assert texts == [c.text for c in sorted(again.choices, key=lambda c: c.index)]  # same seed, same texts
    assert len(set(texts)) > 1  # choice j samples with seed + j: the choices differ
    assert first.usage.prompt_tokens == len("good night")  # the prompt counts once


def test_stop_strings_end_the_text_and_are_not_returned(client):
    full = client.completions.create(model=MODEL, prompt="my lord", max_tokens=30, temperature=0).choices[0].text
    assert len(full) >= 10
    stop = full[6:9]
    cut = client.completions.create(model=MODEL, prompt="my lord", max_tokens=30, temperature=0, stop=[stop, "\x00"])
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_logprobs(client):
    result = client.completions.create(model=MODEL, prompt="ab", max_tokens=6, temperature=0, logprobs=3)
    lp = result.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == result.usage.completion_tokens
    assert "".join(lp.tokens) == result.choices[0].text
    for chosen, token_lp, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert token_lp <= 0 and 1 <= len(top) <= 3
        assert max(top.values()) == pytest.approx(token_lp, abs=1e-4)  # greedy: the chosen token is the likeliest
    streamed = list(client.completions.create(model=MODEL, prompt="ab", max_tokens=6, temperature=0, logprobs=0, stream=True))
    pieces = [c.choices[0].logprobs for c in streamed if c.choices and c.choices[0].logprobs]
    assert [t for p in pieces for t in p.token_logprobs] == pytest.approx(lp.token_logprobs, abs=1e-5)
    assert all(p.top_logprobs is None for p in pieces)  # logprobs=0: the chosen token's only
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0, logprobs=True, top_logprobs=2
    )
    content = chat.choices[0].logprobs.content
    assert content and all(len(entry.top_logprobs) == 2 and entry.logprob <= 0 for entry in content)


def test_models_health_and_metrics(client, server):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    before = server.metric("gptkit_generated_tokens_total")
    client.completions.create(model=MODEL, prompt="x", max_tokens=4, temperature=0)
    assert server.metric("gptkit_generated_tokens_total") >= before + 1
    text = httpx.get(server.url + "/metrics").text
    assert 'gptkit_requests_total{endpoint="/v1/completions",status="200"}' in text
    assert "gptkit_request_duration_seconds_bucket" in text and "gptkit_queue_depth 0" in text


def test_the_playground_page_is_served(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/completions" in page.text and 'id="temperature"' in page.text


BAD_REQUESTS = [
    (b"{not json", 400, None),
    (b"", 400, None),
    (b"[1, 2]", 400, None),
    (json.dumps({"max_tokens": 5}).encode(), 400, "prompt"),
    (json.dumps({"prompt": "a", "temperature": "hot"}).encode(), 400, "temperature"),
    (json.dumps({"prompt": "a", "temperature": 3}).encode(), 400, "temperature"),
    (json.dumps({"prompt": "a", "top_p": 0}).encode(), 400, "top_p"),
    (json.dumps({"prompt": "a", "max_tokens": 0}).encode(), 400, "max_tokens"),
    (json.dumps({"prompt": "a", "max_tokens": 65}).encode(), 400, "max_tokens"),
    (json.dumps({"prompt": "a", "n": 5}).encode(), 400, "n"),
    (json.dumps({"prompt": "a", "n": 0}).encode(), 400, "n"),
    (json.dumps({"prompt": "a", "stop": ["1", "2", "3", "4", "5"]}).encode(), 400, "stop"),
    (json.dumps({"prompt": "a", "logprobs": 99}).encode(), 400, "logprobs"),
    (json.dumps({"prompt": [1, 2, 10**9]}).encode(), 400, "prompt"),
    (json.dumps({"prompt": "a" * 101}).encode(), 400, "prompt"),
    (json.dumps({"prompt": "digits 0123 are not in the char vocabulary"}).encode(), 400, "prompt"),
    (json.dumps({"prompt": "a", "model": "gpt-4"}).encode(), 404, "model"),
    (json.dumps({"prompt": "a", "seed": 1.5}).encode(), 400, "seed"),
]


@pytest.mark.parametrize("body,status,param", BAD_REQUESTS)
def test_malformed_requests_get_openai_errors(server, body, status, param):
    response = httpx.post(server.url + "/v1/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_more_refusals_and_the_server_lives_on(server, client):
    url = server.url
    big = httpx.post(url + "/v1/completions", content=b'{"prompt": "' + b"a" * 30000 + b'"}')
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    chunked = httpx.post(url + "/v1/completions", content=iter([b'{"prompt": "', b"a" * 30000, b'"}']))
    assert chunked.status_code == 413  # no Content-Length: counted while read
    assert httpx.get(url + "/v1/nothing").status_code == 404
    assert httpx.get(url + "/v1/completions").json()["error"]["type"] == "invalid_request_error"  # 405
    bad_chat = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "tool", "content": "x"}]})
    assert bad_chat.status_code == 400 and bad_chat.json()["error"]["param"].startswith("messages")
    assert httpx.post(url + "/v1/chat/completions", json={"messages": []}).status_code == 400
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=MODEL, prompt="a", max_tokens=1000)
    # and after all that, it still serves
    assert client.completions.create(model=MODEL, prompt="a", max_tokens=2).choices[0].text is not None
    assert server.proc.poll() is None


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    plain = make_serve_checkpoint(tmp_path_factory.mktemp("serve-key") / "base.safetensors")
    with ServerProcess(plain, api_key="s3cret") as s:
        yield s


def test_api_key(keyed_server):
    url = keyed_server.url
    assert httpx.get(url + "/health").status_code == 200  # a load balancer's probe needs no key
    missing = httpx.post(url + "/v1/completions", json={"prompt": "a"})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(url + "/metrics").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
    assert good.completions.create(model="base", prompt="a", max_tokens=3).choices[0].text is not None


def test_chat_without_a_template_is_a_clear_400(keyed_server):
    good = openai.OpenAI(base_url=keyed_server.url + "/v1", api_key="s3cret", max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        good.chat.completions.create(model="base", messages=[{"role": "user", "content": "hi"}])
    assert "no chat template" in str(raised.value) and raised.value.body["code"] == "no_chat_template"


def test_serve_refuses_a_missing_checkpoint(run_cli, tmp_path):
    result = run_cli("serve", "--ckpt", tmp_path / "none.safetensors")
    assert result.code == 1 and "Error:" in result.stderr and "Traceback" not in result.output


def test_health_says_503_until_the_model_is_loaded(ckpt, monkeypatch):
    """In process, with the loading held back: /health and the API answer 503 (with Retry-After) until
    the model is ready, and a model that fails to load says why."""
    import threading

    from fastapi.testclient import TestClient

    from gptkit.serve.app import ServerState, create_app, read_model_info
    from gptkit.serve.settings import ServeSettings

    release = threading.Event()

    def slow_load(state, on_fatal):
        release.wait(30)
        state.load_error = "the weights are gone"
        on_fatal(RuntimeError(state.load_error))

    monkeypatch.setattr(ServerState, "load", slow_load)
    settings = ServeSettings(ckpt=ckpt)
    fatal = []
    with TestClient(create_app(settings, read_model_info(settings), on_fatal=fatal.append)) as http:
        loading = http.get("/health")
        assert loading.status_code == 503 and loading.json()["status"] == "loading" and loading.headers["retry-after"]
        busy = http.post("/v1/completions", json={"prompt": "a"})
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "loading" and busy.headers["retry-after"]
        release.set()
        for _ in range(100):
            if fatal:
                break
            threading.Event().wait(0.05)
        failed = http.get("/health")
        assert failed.status_code == 503 and failed.json() == {"status": "failed", "error": "the weights are gone"}
        assert "the weights are gone" in http.post("/v1/completions", json={"prompt": "a"}).json()["error"]["message"]
    assert len(fatal) == 1


def test_serve_help_has_an_example_and_needs_no_torch(run_cli, tmp_path):
    import subprocess
    import sys

    from conftest import subprocess_env

    r = run_cli("serve", "-h")
    assert r.code == 0 and "Example" in r.stdout and "gptkit serve --ckpt" in r.stdout
    code = (
        "import sys, gptkit.cli\n"
        "try:\n    gptkit.cli.main(['serve', '--help'])\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'fastapi', 'uvicorn') if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr


def test_the_template_comes_from_the_checkpoint_or_the_option(ckpt, tmp_path):
    from gptkit.chat_template import TEMPLATES
    from gptkit.serve.app import read_model_info
    from gptkit.serve.settings import ServeSettings

    assert read_model_info(ServeSettings(ckpt=ckpt))["template"] == DEFAULT_TEMPLATE  # recorded by the checkpoint
    plain = make_serve_checkpoint(tmp_path / "plain.safetensors")
    info = read_model_info(ServeSettings(ckpt=plain))
    assert info["template"] is None and info["block_size"] == 128 and info["tokenizer"].kind == "char"
    assert read_model_info(ServeSettings(ckpt=plain, chat_template="alpaca"))["template"] == TEMPLATES["alpaca"]
