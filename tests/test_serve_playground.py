"""The playground page at GET / in a real headless browser: Chromium from the system's package manager
(apt-get install chromium), driven by Playwright for Python through that executable (no download). The
test types a prompt, sets the controls, presses Generate, and reads the streamed text from the page.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
import httpx  # noqa: E402

from serve_fixtures import ServerProcess, make_serve_checkpoint  # noqa: E402

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The system's Chromium; GPTKIT_CHROMIUM names another. (Debian's /usr/bin/chromium is a wrapper script
    around /usr/lib/chromium/chromium, which Playwright launches directly.)"""
    for candidate in (os.environ.get("GPTKIT_CHROMIUM"), *CHROMIUM_CANDIDATES):
        if candidate and (Path(candidate).is_file() and os.access(candidate, os.X_OK) or shutil.which(candidate)):
            return candidate if Path(candidate).is_file() else shutil.which(candidate)
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found: apt-get install chromium (or set GPTKIT_CHROMIUM)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ckpt = make_serve_checkpoint(tmp_path_factory.mktemp("playground") / "ckpt.safetensors")
    with ServerProcess(ckpt, api_key="pw-key") as s:
        yield s


def test_the_playground_streams_a_completion(server):
    expected = httpx.post(
        server.url + "/v1/completions", headers=server.headers,
        json={"prompt": "the king", "max_tokens": 30, "temperature": 0, "top_k": 0, "top_p": 1},
    ).json()["choices"][0]["text"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.fill("#api-key", "pw-key")
            page.fill("#prompt", "the king")
            page.fill("#max-tokens", "30")
            page.fill("#top-k", "0")
            page.eval_on_selector("#temperature", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }")
            assert page.text_content("#temperature-value") == "0.00"
            page.evaluate(
                "window.updates = 0; new MutationObserver(() => window.updates++)"
                ".observe(document.getElementById('output'), {subtree: true, childList: true, characterData: true})"
            )
            page.click("#generate")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=60_000)
            assert page.evaluate("window.updates") > 3  # the text grew piece by piece as the events arrived
            assert page.text_content("#completion") == expected
            assert page.text_content("#output") == "the king" + expected
            assert "finish: " in page.text_content("#status")
            # a wrong key: the page says what the server said
            page.fill("#api-key", "wrong")
            page.click("#generate")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('error')", timeout=60_000)
            assert "incorrect API key" in page.text_content("#status")
        finally:
            browser.close()
