"""HTTP service: FastAPI app with POST /ask and GET /health; index and models are loaded once, at start-up."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from rag.config import Settings
from rag.pipeline import Pipeline
from rag.schema import AskRequest, AskResponse, HealthResponse

log = logging.getLogger("rag.server")

#: Largest request body accepted (a 1,000-character question needs far less).
MAX_BODY_BYTES = 16 * 1024


class BodySizeLimit:
    """ASGI middleware: answer 413 to a request whose body is larger than `limit` bytes, declared or streamed."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        seen = 0
        responded = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not responded:
                await self._reject(send)

    async def _reject(self, send) -> None:
        body = b'{"detail":"request body too large (limit %d bytes)"}' % self.limit
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _describe(errors: list) -> str:
    """One readable sentence per validation error: where, then what is wrong."""
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "json_invalid":
            where, message = "body", f"malformed JSON ({e.get('ctx', {}).get('error', 'cannot be parsed')})"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def create_app(settings: Settings | None = None, rebuild: bool = True, pipeline: Pipeline | None = None) -> FastAPI:
    """The application; the pipeline is built in the lifespan handler unless one is given (tests)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.pipeline = pipeline or Pipeline.from_settings(settings, rebuild=rebuild)
        app.state.settings = settings
        p = app.state.pipeline
        log.info("ready: %d documents, %d passages", len(p.documents), len(p.retriever.index.chunks))
        yield

    app = FastAPI(
        title="rag: extractive question answering",
        description="Answers questions with the exact words of the indexed documents and cites them, or abstains.",
        version="0.1.0",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def log_requests(request: Request, call_next):
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            log.info("%s %s %d %.1fms", request.method, request.url.path, status, (time.perf_counter() - started) * 1000)

    app.add_middleware(BodySizeLimit)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": _describe(exc.errors())})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error; see the server log"})

    @app.post("/ask", response_model=AskResponse, summary="Answer a question from the documents, or abstain",
              responses={413: {"description": "Body too large"}, 422: {"description": "Invalid request"}})
    async def ask(body: AskRequest, request: Request) -> AskResponse:
        answer = await run_in_threadpool(request.app.state.pipeline.run, body.question, body.top_k)
        return AskResponse.from_answer(answer)

    @app.get("/health", response_model=HealthResponse, summary="Readiness, corpus size and models in use")
    async def health(request: Request) -> HealthResponse:
        p: Pipeline = request.app.state.pipeline
        return HealthResponse(
            status="ok",
            documents=len(p.documents),
            passages=len(p.retriever.index.chunks),
            embedding_model=p.retriever.embedder.model_name,
            reader_model=p.reader.model_name,
            retrieval_mode=p.retriever.mode,
            no_answer_threshold=p.threshold,
        )

    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn rag.server:app_from_env --factory --workers N` (RAG_DOCS, RAG_INDEX set the folders)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(Settings(), rebuild=False)
