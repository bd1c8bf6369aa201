"""`gptkit serve`: an OpenAI-compatible HTTP server over the generation engine.

    settings = ServeSettings(ckpt="out/ckpt.safetensors", port=8000)
    serve(settings)                 # blocks; SIGTERM or Ctrl-C drains in-flight requests, then returns

The package, one concept per module:

    settings.py     what the server is told: address, key, limits
    schemas.py      the request bodies (OpenAI's fields, ranges, defaults), checked strictly
    api_errors.py   every refusal as OpenAI's {"error": {"message", "type", "param", "code"}}
    scheduler.py    one worker thread steps the engine; requests join and leave the running batch
    service.py      requests -> engine rows; events -> responses, whole or streamed (server-sent events)
    responses.py    OpenAI's response and chunk shapes, log-probabilities included
    middleware.py   timing, the body-size cap, the API key
    metrics.py      Prometheus text for GET /metrics
    app.py          the FastAPI routes, the model loaded in the background
    static/         the playground page at GET /

FastAPI and uvicorn are an optional extra: pip install 'gptkit[serve]'.
"""

from __future__ import annotations

from gptkit.serve.settings import ServeSettings

__all__ = ["ServeSettings", "serve"]


def serve(settings: ServeSettings) -> None:
    """Run the server until SIGTERM / Ctrl-C (which finish the requests in flight first, up to
    settings.drain_timeout seconds). A model that fails to load stops the server with its error."""
    from gptkit.errors import GptkitError

    try:
        import uvicorn

        from gptkit.serve.app import create_app, read_model_info
    except ImportError as e:
        raise GptkitError(f"gptkit serve needs FastAPI and uvicorn ({e.name} is not installed)", hint="pip install 'gptkit[serve]'") from None

    model_info = read_model_info(settings)  # a wrong file is an error now, before anything listens
    failure: list[BaseException] = []

    def on_fatal(error: BaseException) -> None:
        failure.append(error)
        server.should_exit = True

    app = create_app(settings, model_info, on_fatal=on_fatal)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        timeout_graceful_shutdown=settings.drain_timeout, access_log=settings.log_level == "debug",
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind (it has logged why)
        raise GptkitError(f"could not listen on {settings.host}:{settings.port}", hint="is another server using that port? choose one with --port") from None
    if failure:
        error = failure[0]
        raise error if isinstance(error, GptkitError) else GptkitError(f"could not load the model: {type(error).__name__}: {error}")
