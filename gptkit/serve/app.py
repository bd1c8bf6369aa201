"""The HTTP application: routes, the checks every request passes, and the model loaded in the background.

    GET  /                      the playground (static/playground.html)
    GET  /health                200 {"status": "ok"} when ready; 503 while the model loads (or failed to)
    GET  /metrics               Prometheus text (metrics.py)
    GET  /v1/models             the one model served
    POST /v1/completions        OpenAI's completions
    POST /v1/chat/completions   OpenAI's chat completions, with the checkpoint's chat template

Before a handler runs, four layers of ASGI middleware, outermost first:

    Timing       latency and status of every request, for /metrics           (middleware.py)
    BodyLimit    reads at most max_body_bytes of the body (413 beyond, whatever Content-Length claims)
    ApiKey       with --api-key, /v1/* and /metrics need "Authorization: Bearer KEY" (401 otherwise)
    LastResort   an unforeseen exception: a 500 in OpenAI's shape, logged

Every refusal, and every error nobody foresaw, is an OpenAI-shaped JSON body: nothing a client sends ends
the process. The socket is bound while the model loads in a thread; until it is ready /health
says 503 and the /v1 endpoints answer 503 with Retry-After.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gptkit.serve.api_errors import ApiError, error_response
from gptkit.serve.metrics import Metrics
from gptkit.serve.middleware import ApiKey, BodyLimit, LastResort, Timing
from gptkit.serve.schemas import ChatCompletionRequest, CompletionRequest, parse_request
from gptkit.serve.scheduler import Scheduler
from gptkit.serve.service import ClientGone, Service
from gptkit.serve.settings import ServeSettings

log = logging.getLogger("gptkit.serve")


class ServerState:
    """What the handlers share: the settings, the metrics, and the service once the model is loaded."""

    def __init__(self, settings: ServeSettings, model_info: dict):
        self.settings = settings
        self.model_info = model_info  # tokenizer, block_size, template: read from the checkpoint's header
        self.metrics = Metrics()
        self.service: Service | None = None
        self.scheduler: Scheduler | None = None
        self.load_error: str | None = None
        self.created = int(time.time())

    def load(self, on_fatal) -> None:
        """Build the engine (the slow part: torch, the weights) and start the scheduler's worker."""
        try:
            from gptkit.engine import Engine

            s = self.settings
            engine = Engine.from_checkpoint(s.ckpt, device=s.device, dtype=s.dtype, adapter=s.adapter, max_batch_size=s.max_batch_size)
            scheduler = Scheduler(engine, s.max_batch_size, s.max_queue)
            scheduler.start()
            info = self.model_info
            self.service = Service(info["tokenizer"], scheduler, s, self.metrics, info["block_size"], info["template"])
            self.scheduler = scheduler
            log.info("model ready: %s", s.ckpt)
        except Exception as e:  # a GptkitError says what to fix; anything else is reported the same way
            self.load_error = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            log.error("could not load %s: %s", self.settings.ckpt, self.load_error)
            if on_fatal is not None:
                on_fatal(e)

    def ready_service(self) -> Service:
        if self.service is None:
            if self.load_error:
                raise ApiError(503, f"the model failed to load: {self.load_error}", code="model_failed")
            raise ApiError(503, "the model is still loading; try again shortly", code="loading", headers={"Retry-After": "2"})
        return self.service


def create_app(settings: ServeSettings, model_info: dict, on_fatal=None) -> FastAPI:
    """The app for `settings`; `model_info` from read_model_info; `on_fatal(error)` is called when loading fails."""
    from contextlib import asynccontextmanager

    state = ServerState(settings, model_info)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=state.load, args=(on_fatal,), name="gptkit-load", daemon=True).start()
        yield
        if state.scheduler is not None:  # after the server drained its requests (SIGTERM)
            state.scheduler.stop()

    app = FastAPI(title="gptkit serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gptkit = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        message = {404: f"no such endpoint: {request.method} {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return error_response(e.status_code, message.get(e.status_code, str(e.detail)))

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return HTMLResponse(resources.files("gptkit.serve").joinpath("static/playground.html").read_text(encoding="utf-8"))

    @app.get("/health")
    async def health():
        if state.service is not None:
            return {"status": "ok", "model": settings.served_name}
        status = "failed" if state.load_error else "loading"
        return JSONResponse({"status": status, "error": state.load_error}, status_code=503, headers={"Retry-After": "2"})

    @app.get("/metrics")
    async def metrics():
        scheduler = state.scheduler
        text = state.metrics.render(scheduler.waiting if scheduler else 0, scheduler.running if scheduler else 0, state.service is not None)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    def model_card() -> dict:
        return {"id": settings.served_name, "object": "model", "created": state.created, "owned_by": "gptkit"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        check_model(model_id)
        return model_card()

    def check_model(name: str | None) -> None:
        if name not in (None, settings.served_name):
            raise ApiError(404, f"the model {name!r} does not exist; this server serves {settings.served_name!r}", param="model", code="model_not_found")

    async def generate(request: Request, kind: str):
        started = time.monotonic()
        service = state.ready_service()
        req = parse_request(CompletionRequest if kind == "completion" else ChatCompletionRequest, await request.body())
        check_model(req.model)
        prepared = service.prepare_completion(req) if kind == "completion" else service.prepare_chat(req)
        job = service.submit(prepared)
        shapes = service.shapes(kind)
        if req.stream:
            events = service.stream(job, request.receive, started, shapes, prepared, req.logprobs, req.include_usage)
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: pass each event on at once
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        try:
            choices = await service.collect(job, request.receive, started)
        except ClientGone:
            return Response(status_code=499)  # nobody is there to read it (nginx's code for this)
        except Exception as e:
            log.exception("generation failed")
            raise ApiError(500, f"generation failed ({type(e).__name__}: {e})") from None
        if kind == "completion":
            return shapes.completion(choices, prepared.prompt_tokens, req.logprobs, prepared.prefixes)
        return shapes.chat(choices, prepared.prompt_tokens, req.logprobs)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generate(request, "completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await generate(request, "chat")

    # added last = outermost
    app.add_middleware(LastResort)
    app.add_middleware(ApiKey, api_key=settings.api_key)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Timing, metrics=state.metrics)
    return app


def read_model_info(settings: ServeSettings) -> dict:
    """From the checkpoint's header alone (no torch, no weights): its tokenizer, context and chat template,
    so that a wrong path or file is an error before the server starts."""
    from gptkit.chat_template import check_template, resolve_template
    from gptkit.checkpoint_format import read_checkpoint_header
    from gptkit.tokenizers.loading import tokenizer_from_spec

    metadata = read_checkpoint_header(settings.ckpt).metadata
    # The template a fine-tuned checkpoint records (metadata "chat_template"); an adapter's own comes
    # first, as inference.LoadedModel.chat_template has it: the adapter is what learned to answer.
    sources = [(settings.adapter, read_checkpoint_header(settings.adapter).metadata)] if settings.adapter else []
    sources.append((settings.ckpt, metadata))
    path = None
    try:
        tokenizer = tokenizer_from_spec(json.loads(metadata["tokenizer"]))
        block_size = int(json.loads(metadata["model_config"])["block_size"])
        template = None
        for path, source in sources:
            if source.get("chat_template"):
                template = check_template(json.loads(source["chat_template"]), f"{path}'s chat template")
                break
    except (KeyError, ValueError, TypeError) as e:
        from gptkit.checkpoint_format import DamagedFile

        raise DamagedFile(path or settings.ckpt, f"has damaged metadata ({type(e).__name__}: {e})") from None
    if settings.chat_template is not None:
        template = resolve_template(settings.chat_template)
    return {"tokenizer": tokenizer, "block_size": block_size, "template": template}
