"""The checks every request passes before a handler sees it, as plain ASGI middleware (so that they see a
streamed response and a disconnect as they happen), outermost first:

    Timing       the latency and status of every request, for /metrics (unknown paths count as "other",
                 so that a scanner cannot grow the metrics without bound)
    BodyLimit    reads at most max_body_bytes of the body: 413 beyond, whatever Content-Length claims
    ApiKey       with --api-key, /v1/* and /metrics need "Authorization: Bearer KEY" (401 otherwise)
    LastResort   an exception nobody foresaw becomes a 500 in OpenAI's shape, and the connection lives on
"""

from __future__ import annotations

import hmac
import json
import logging
import time

from gptkit.serve.api_errors import error_body
from gptkit.serve.metrics import Metrics

log = logging.getLogger("gptkit.serve")
KNOWN_PATHS = ("/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions")


async def _send_error(send, status: int, message: str, code: str | None = None, headers: dict | None = None) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class Timing:
    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        path = scope["path"]
        endpoint = path if path in KNOWN_PATHS else "/v1/models" if path.startswith("/v1/models/") else "other"
        status = 500

        async def timed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.request_done(endpoint, status, time.monotonic() - started)
            await send(message)

        await self.app(scope, receive, timed_send)


class BodyLimit:
    """Reads the whole body (at most max_bytes) before the app runs, then hands it over as one message."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = f"the request body is larger than this server's limit of {self.max_bytes:,} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _send_error(send, 413, too_big, code="body_too_large")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _send_error(send, 413, too_big, code="body_too_large")
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only the client's disconnect

        await self.app(scope, replay, send)


class ApiKey:
    def __init__(self, app, api_key: str | None):
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and self.api_key and (path.startswith("/v1/") or path == "/metrics"):
            given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            # compare_digest: the time taken does not tell how much of a guess was right
            if not hmac.compare_digest(token.encode("utf-8", "replace"), self.api_key.encode("utf-8")):
                message = "missing API key: send 'Authorization: Bearer KEY'" if not given else "incorrect API key"
                return await _send_error(send, 401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        await self.app(scope, receive, send)


class LastResort:
    """Starlette's own handler answers 500 but then re-raises, and uvicorn drops the connection; here the
    error is logged and answered, and that is the end of it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as e:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if scope["type"] == "http" and not started:
                await _send_error(send, 500, f"internal error ({type(e).__name__}); the server carries on")
