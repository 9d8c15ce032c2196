"""HTTP service: FastAPI app with POST /ask and GET /health; index and models are loaded once, at start-up."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.middleware.trustedhost import TrustedHostMiddleware

from rag.config import Settings
from rag.errors import QuestionError, RagError, UnavailableError
from rag.pipeline import Pipeline
from rag.schema import AskRequest, AskResponse, DocumentResponse, HealthResponse

log = logging.getLogger("rag.server")

#: Largest request body accepted (a 1,000-character question needs far less).
MAX_BODY_BYTES = 16 * 1024


class BodyLimits:
    """ASGI middleware: 413 for a body larger than `limit` bytes (declared or streamed), 408 for a body
    not received in full within `deadline` seconds (a client that declares 1,000 bytes and sends 17, or
    one byte every few seconds, would otherwise hold a connection and a worker for as long as it likes).
    Once the body is complete, later receive() calls (a response watching for a disconnect) pass through."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES, deadline: float = Settings.body_deadline_seconds) -> None:
        self.app = app
        self.limit = limit
        self.deadline = deadline

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send, _TooLarge(self.limit))
        seen = 0
        complete = False
        responded = False
        deadline = asyncio.get_running_loop().time() + self.deadline

        async def limited_receive():
            nonlocal seen, complete
            if complete:
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.001))
            except asyncio.TimeoutError:
                raise _TooSlow(self.deadline) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
                complete = not message.get("more_body", False)
            return message

        async def tracking_send(message):
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (_TooLarge, _TooSlow) as err:  # raised outside FastAPI's body parsing (which answers them itself)
            if not responded:
                await self._reject(send, err)

    @staticmethod
    async def _reject(send, err: HTTPException) -> None:
        body = json.dumps({"detail": err.detail}).encode()
        await send({"type": "http.response.start", "status": err.status_code,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    """An HTTPException, so FastAPI passes it through when it is raised while the body is parsed."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body too large (limit {limit} bytes)")


class _TooSlow(HTTPException):
    def __init__(self, deadline: float) -> None:
        super().__init__(status_code=408, detail=f"request body not received within {deadline:g} s")


class AccessLog:
    """ASGI middleware, outermost: one line per request (client, method, path, status, latency), for
    every response including the 413/408 that BodyLimits gives before the app sees the request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client") or ("-", 0)
            path = scope["path"].encode("unicode_escape").decode("ascii")  # no control characters in the log
            log.info("%s:%s %s %s %d %.1fms", client[0], client[1], scope["method"], path, status,
                     (time.perf_counter() - started) * 1000)


def _describe(errors: list) -> str:
    """One readable sentence per validation error: where, then what is wrong."""
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "json_invalid":
            where, message = "body", f"malformed JSON ({e.get('ctx', {}).get('error', 'cannot be parsed')})"
        elif where == "body" and e.get("type") in ("model_attributes_type", "dict_type", "missing"):
            message = 'expected a JSON object such as {"question": "…"}, sent with Content-Type: application/json'
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


#: The web page's files (index.html, app.js, style.css), shipped inside the package.
WEB_DIR = Path(__file__).resolve().parent / "web"
#: Headers of the page and its files: scripts and styles only from this server's own files (no inline
#: script can run, wherever it came from), no framing, no content-type sniffing.
PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class SecuredStatic(StaticFiles):
    """The page's static files, with the page's security headers."""

    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


def loaded_pipeline(request: Request) -> Pipeline:
    """FastAPI dependency: the pipeline loaded once, in the lifespan handler."""
    return request.app.state.pipeline


#: Host names a browser uses for this machine: on a loopback bind only these are answered, so a page of
#: another site whose name is made to resolve to 127.0.0.1 (DNS rebinding) cannot read the documents.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def create_app(settings: Settings | None = None, rebuild: bool = True, pipeline: Pipeline | None = None,
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The application; the pipeline is built in the lifespan handler unless one is given (tests). With
    `allowed_hosts`, a request whose Host header names another host gets a 400."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.pipeline = pipeline or Pipeline.from_settings(settings, rebuild=rebuild)
        store = app.state.pipeline.retriever.store
        app.state.watch = store.corpus_watch(settings)
        log.info("ready: %d documents, %d passages (%s store)", *store.counts(), store.kind)
        try:
            yield
        finally:
            if pipeline is None:  # built here, so released here (a PostgreSQL pool's connections)
                app.state.pipeline.close()

    app = FastAPIOffline(  # /docs and /redoc from the package's own copies of Swagger UI and ReDoc, not a CDN
        title="rag: extractive question answering",
        description="Answers questions with the exact words of the indexed documents and cites them, or abstains.",
        version="0.1.0",
        lifespan=lifespan,
    )

    app.add_middleware(BodyLimits, deadline=settings.body_deadline_seconds)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts, www_redirect=False)
    app.add_middleware(AccessLog)  # added last: outermost

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": _describe(exc.errors())})

    @app.exception_handler(RagError)
    async def expected_error(request: Request, exc: RagError):
        """The one mapping of the package's errors: a bad question is the client's (422), anything else
        (a damaged model or index found while answering) is ours (500), each with its one-line message."""
        if isinstance(exc, QuestionError):
            return JSONResponse(status_code=422, content={"detail": f"{exc.field}: {exc}"})
        if isinstance(exc, UnavailableError):  # the database is down or slow: the client may retry
            log.error("unavailable on %s %s: %s", request.method, request.url.path, exc)
            return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "5"})
        log.error("error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error; see the server log"})

    @app.post("/ask", response_model=AskResponse, summary="Answer a question from the documents, or abstain",
              responses={413: {"description": "Body too large"}, 422: {"description": "Invalid request"},
                         503: {"description": "The index database is unreachable or slow; retry later"}})
    async def ask(body: AskRequest, request: Request, pipeline: Pipeline = Depends(loaded_pipeline)) -> AskResponse:
        await _take_up_rebuilds(request.app, settings)
        answer = await run_in_threadpool(pipeline.run, body.question, body.top_k)
        response = AskResponse.from_answer(answer)
        changes = await _corpus_changes(request.app)
        stale = {c.source for c in response.citations} & changes.keys()
        response.warnings += [f"{source} was {changes[source]} since the index was built: the citation may no "
                              "longer match the file; rebuild with `rag index`" for source in sorted(stale)]
        return response

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The web page for asking (rag/web/): plain HTML, CSS and one script, nothing from a CDN."""
        return FileResponse(WEB_DIR / "index.html", headers=PAGE_HEADERS)

    @app.get("/documents/{source:path}", include_in_schema=False)
    async def document_page(source: str, pipeline: Pipeline = Depends(loaded_pipeline)) -> FileResponse:
        """The same page in document mode; only a source of the index exists here (no file is read)."""
        if not await run_in_threadpool(pipeline.documents.__contains__, source):  # may be a database query
            raise HTTPException(status_code=404, detail="no such document in the index")
        return FileResponse(WEB_DIR / "index.html", headers=PAGE_HEADERS)

    @app.get("/api/documents/{source:path}", response_model=DocumentResponse,
             summary="The indexed text of a document (citations' offsets index it)",
             responses={404: {"description": "No such document in the index"}})
    async def document_text(source: str, pipeline: Pipeline = Depends(loaded_pipeline)) -> DocumentResponse:
        # A lookup among indexed sources (never a path on disk), off the event loop: it may query a database.
        document = await run_in_threadpool(pipeline.documents.get, source)
        if document is None:
            raise HTTPException(status_code=404, detail="no such document in the index")
        return DocumentResponse(source=document.source, text=document.text)

    app.mount("/static", SecuredStatic(directory=WEB_DIR), name="static")

    @app.get("/health", response_model=HealthResponse, summary="Readiness, corpus size and models in use")
    async def health(request: Request, pipeline: Pipeline = Depends(loaded_pipeline)) -> HealthResponse:
        await _take_up_rebuilds(request.app, settings)
        changes = await _corpus_changes(request.app)
        return HealthResponse(
            status="stale" if changes else "ok",
            corpus_changes=[f"{source} {what}" for source, what in sorted(changes.items())],
            **await run_in_threadpool(pipeline.describe),
        )

    return app


async def _corpus_changes(app: FastAPI) -> dict[str, str]:
    """Files changed, removed or added since the index was built (checked at most every 30 s)."""
    watch = getattr(app.state, "watch", None)
    return await run_in_threadpool(watch.check) if watch is not None else {}


async def _take_up_rebuilds(app: FastAPI, settings: Settings) -> None:
    """An index rebuilt on disk by `rag index` replaces the loaded one between questions (one stat per
    request), and the corpus watch starts again from the new build's files."""
    pipeline = app.state.pipeline
    if await run_in_threadpool(pipeline.refresh):
        app.state.watch = await run_in_threadpool(pipeline.retriever.store.corpus_watch, settings)


def uvicorn_limits() -> dict:
    """Connection limits for uvicorn: idle keep-alive connections close after 5 s, and past 64 requests or
    connections at once new ones get a 503 at once instead of queueing without end."""
    return {"timeout_keep_alive": 5, "limit_concurrency": 64, "timeout_graceful_shutdown": 10}


def allowed_hosts_for(bind: str, given: list[str] | None = None) -> list[str] | None:
    """The Host names to answer: those given, else on a loopback bind the loopback names (and the address
    bound), else any (None: behind a proxy the public name is not known here)."""
    if given:
        return list(given)
    import ipaddress

    try:
        loopback = bind == "localhost" or ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return None
    shown = f"[{bind.strip('[]')}]" if ":" in bind else bind
    return sorted({*LOOPBACK_HOSTS, shown})


def app_from_env() -> FastAPI:
    """Factory for `uvicorn rag.server:app_from_env --factory --workers N` (RAG_DOCS, RAG_INDEX set the folders;
    RAG_ALLOWED_HOSTS, comma-separated, the Host names answered: default the loopback names)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import os

    given = [h.strip() for h in os.environ.get("RAG_ALLOWED_HOSTS", "").split(",") if h.strip()]
    return create_app(Settings(), rebuild=False, allowed_hosts=allowed_hosts_for("127.0.0.1", given))
