"""The application factory: the model loaded once in `lifespan`, the routers, JSON errors."""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from digitnet import __version__
from digitnet.backend import available_cpus
from digitnet.serving.batcher import DirectPredictor, MicroBatcher
from digitnet.serving.model import ServedModel, load_served_model
from digitnet.serving.routers import api, page
from digitnet.serving.settings import ServeSettings
from digitnet.serving.uploads import RequestError

ROUTES = "/, /predict, /healthz, /model, /openapi.json"
# Everything the page uses comes from this server; a browser refuses anything else.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def create_app(model_path: str | Path | None, settings: ServeSettings | None = None,
               model: ServedModel | None = None) -> FastAPI:
    """The digitnet server as an ASGI application.

    Args:
      model_path: a run directory, a .keras or .tflite file, or None for runs/latest; loaded
        at start-up (in `lifespan`), once.
      settings: limits and defaults; ServeSettings() when None.
      model: an already loaded model to serve instead of loading `model_path` (the CLI loads
        it before it binds the port, so that a bad model is a one-line error).

    Returns:
      The FastAPI app: POST /predict, GET /healthz, GET /model, the page at /. The OpenAPI
      schema is at /openapi.json; the interactive docs pages are off, as they load their
      scripts from a CDN.
    """
    settings = settings or ServeSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        served = model or load_served_model(model_path)
        predictor = (MicroBatcher(served.predict, settings.max_batch,
                                  settings.max_wait_ms / 1000, inline=served.quick)
                     if settings.batching else DirectPredictor(served.predict, served.quick))
        app.state.model, app.state.predictor, app.state.settings = served, predictor, settings
        # Preprocessing is mostly Python and numpy holding the GIL: a thread per CPU at most,
        # as more only take turns (32 requests in 32 threads spent half the server's CPU
        # handing the GIL between them; bench/serve_load.py: 3.5 -> 1.9 ms per 28x28 answer).
        app.state.preprocessing = anyio.CapacityLimiter(available_cpus())
        # ... and a large image (up to 1 GB) one at a time: six 200 KB uploads of 49-megapixel
        # PNGs, two at once, took the server to 1.8 GB, and a core each would take 1 GB each
        app.state.large_images = anyio.CapacityLimiter(1)
        predictor.start()
        yield
        await predictor.stop()

    app = FastAPI(title="digitnet", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, summary="Handwritten-digit classifier: draw, upload, predict.")
    app.include_router(api.router)
    app.include_router(page.router)
    add_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    return app


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """Every error answer: {"error": one line}, as the CLI's `Error: ...` line."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError):
        # a body refused unread: say so, and close the connection rather than read the rest
        close = {"connection": "close"} if exc.status in (408, 413) else None
        return error(exc.status, str(exc), close)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return error(404, f"{request.url.path}: no such page (this server has {ROUTES})")
        if exc.status_code == 405:
            allowed = exc.headers.get("Allow", "") if exc.headers else ""
            return error(405, f"{request.method} {request.url.path}: method not allowed "
                              f"(use {allowed or 'another method'})", exc.headers)
        return error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        received = first.get("input")
        return error(422, f"{where}: {first.get('msg', 'invalid')}"
                          f"{'' if received is None else f', received {received!r}'}"[:300])


class SecurityHeaders:
    """Pure ASGI middleware adding SECURITY_HEADERS to every answer (cheaper than
    BaseHTTPMiddleware, which would also wrap the streamed request body)."""

    def __init__(self, app):
        self.app = app
        self.extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *self.extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
