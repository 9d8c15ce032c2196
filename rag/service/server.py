"""HTTP service: the FastAPI app. Index and models load once, at start-up (the lifespan); the routes are in
rag.service.routes, the middleware (body limits, API keys, access log) in rag.service.middleware. Errors map to statuses
here, once."""
from __future__ import annotations

import logging
import re
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from rag.config import Settings
from rag.errors import QuestionError, RagError, UnavailableError
from rag.pipeline.qa import Pipeline
from rag.service.catalog import Collections
from rag.service.collection import CollectionError
from rag.service.feedback import FeedbackError, FeedbackLimits, open_feedback
from rag.service.keys import KeyStore
from rag.service.metrics import Metrics
from rag.service.middleware import AccessLog, Auth, BodyLimits
from rag.service.routes import WEB_DIR, SecuredStatic, router

log = logging.getLogger("rag.service.server")

#: Host names a browser uses for this machine: on a loopback bind only these are answered, so a page of
#: another site whose name is made to resolve to 127.0.0.1 (DNS rebinding) cannot read the documents.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
#: Multipart framing around an uploaded file, allowed beyond the file size limit.
UPLOAD_OVERHEAD = 64 * 1024


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


def create_app(settings: Settings | None = None, rebuild: bool = True, pipeline: Pipeline | None = None,
               allowed_hosts: list[str] | None = None, public: list[str] | None = None,
               keys_required: bool = False, writable_default: bool = False, watch: bool = False) -> FastAPI:
    """The application; the pipeline is built in the lifespan handler unless one is given (tests). With
    `allowed_hosts`, a request whose Host header names another host gets a 400; `public` names routes
    open without a key even when keys exist (e.g. /metrics); `keys_required` (a non-loopback bind) keeps
    every route closed while no key exists; `writable_default` lets uploads and deletes change the
    `default` collection's folder (the --docs folder, the user's own files); `watch` keeps every collection's
    folder in step with its index as files are saved, renamed and removed there (rag.service.watch)."""
    settings = settings or Settings()
    keys = KeyStore(settings.data_dir)
    metrics = Metrics()

    mcp, mcp_route = _mcp(lambda: app.state.collections)  # read at call time: the lifespan makes them

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with mcp.session_manager.run():  # the /mcp route's sessions: one task group for the app's life
            async with _serving(app, settings, pipeline, rebuild, writable_default, watch):
                yield

    app = FastAPIOffline(  # /docs and /redoc from the package's own copies of Swagger UI and ReDoc, not a CDN
        title="rag: extractive question answering",
        description="Answers questions with the exact words of the indexed documents and cites them, or abstains.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.keys, app.state.metrics, app.state.feedback = keys, metrics, open_feedback(settings)
    app.state.feedback_limits = FeedbackLimits(settings.feedback_per_minute, settings.feedback_cap)
    app.add_middleware(BodyLimits, deadline=settings.body_deadline_seconds,
                       uploads=(settings.max_file_bytes + UPLOAD_OVERHEAD, settings.upload_deadline_seconds))
    app.add_middleware(Auth, keys=keys, public=re.compile("|".join(map(re.escape, public))) if public else None,
                       required=keys_required)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts, www_redirect=False)
    app.add_middleware(AccessLog, metrics=metrics)  # added last: outermost
    _error_handlers(app)
    app.include_router(router)
    app.router.routes.append(mcp_route)
    app.mount("/static", SecuredStatic(directory=WEB_DIR), name="static")
    return app


def _mcp(collections):
    """The MCP server and its route, POST /mcp (streamable HTTP, stateless, so any worker answers any request), over
    the app's collections; the app's own middleware checks keys, hosts and origins, as for every route."""
    from mcp.server.transport_security import TransportSecuritySettings

    from rag.service.access import reaches_in
    from rag.service.mcp import build_server

    server = build_server(collections, reach=reaches_in)  # a key's collections, as on every other route
    starlette = server.streamable_http_app(streamable_http_path="/mcp", stateless_http=True, json_response=True,
                                           transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    return server, next(r for r in starlette.routes if getattr(r, "path", None) == "/mcp")


@asynccontextmanager
async def _serving(app: FastAPI, settings: Settings, pipeline: Pipeline | None, rebuild: bool, writable_default: bool,
                   watch: bool):
    """The index, models and collections, loaded once for the app's life, and with `watch` the watcher
    that keeps the collections' folders in step (rag.service.watch)."""
    state = app.state
    state.pipeline = pipeline or Pipeline.from_settings(settings, rebuild=rebuild)
    # The managed collections open in the background (a build after a restart may take minutes): meanwhile
    # /health says which are still loading, and their routes answer 503 with Retry-After.
    state.collections = await run_in_threadpool(Collections, settings, state.pipeline, writable_default, True)
    state.watch = state.pipeline.store.corpus_watch(settings)
    state.take_up_rebuilds = lambda: _take_up_rebuilds(app, settings)
    state.corpus_changes = lambda: _corpus_changes(app)
    store = state.pipeline.store
    state.watcher = None
    if watch:
        from rag.service.watch_targets import watch_collections

        state.watcher = await run_in_threadpool(watch_collections, settings, state.collections)
        log.info("watching %d folders (%s)", len(state.watcher.describe()["folders"]), state.watcher.mode)
    loading = state.collections.loading()
    log.info("ready: %d documents, %d passages (%s store), %d collections%s", *store.counts(), store.kind,
             len(state.collections.names()), f" ({len(loading)} still loading)" if loading else "")
    try:
        yield
    finally:
        if state.watcher is not None and not await run_in_threadpool(state.watcher.stop, 30):
            log.warning("a watched folder's sync was still running at shutdown: its index is left as it was")
        state.collections.close()
        app.state.feedback.close()
        if pipeline is None:  # built here, so released here (a PostgreSQL pool's connections)
            state.pipeline.close()


def _error_handlers(app: FastAPI) -> None:
    """The one mapping of errors to statuses: a bad request is the client's (422, or the collection error's
    own 404/409/413), an unreachable database a 503, anything else ours (500) with its one-line message."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the methods of the first route on the path only
            headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": _describe(exc.errors())})

    @app.exception_handler(RagError)
    async def expected_error(request: Request, exc: RagError):
        if isinstance(exc, QuestionError):
            return JSONResponse(status_code=422, content={"detail": f"{exc.field}: {exc}"})
        if isinstance(exc, (CollectionError, FeedbackError)):  # each carries its own status (a 429 when to retry)
            retry = getattr(exc, "retry_after", None)
            return JSONResponse(status_code=exc.status, content={"detail": str(exc)},
                                headers={"Retry-After": str(retry)} if retry else None)
        if isinstance(exc, UnavailableError):  # the database is down or slow: the client may retry
            log.error("unavailable on %s %s: %s", request.method, request.url.path, exc)
            return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "5"})
        log.error("error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error; see the server log"})


def allowed_methods(app: FastAPI, scope) -> list[str]:
    """The methods some route of the app takes on this request's path (the 405's Allow header): the app's
    own routes and those of rag.service.routes (which FastAPI keeps behind one included-router entry)."""
    from starlette.routing import Match

    methods = set()
    for route in [*app.router.routes, *router.routes]:
        if route.matches(scope)[0] != Match.NONE:  # PARTIAL: the path matches, the method does not
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _corpus_changes(app: FastAPI) -> dict[str, str]:
    """Files changed, removed or added since the index was built (checked at most every 30 s)."""
    watch = getattr(app.state, "watch", None)
    return await run_in_threadpool(watch.check) if watch is not None else {}


async def _take_up_rebuilds(app: FastAPI, settings: Settings) -> None:
    """An index rebuilt on disk by `rag index` replaces the loaded one between questions (one stat per
    request), and the corpus watch starts again from the new build's files."""
    pipeline = app.state.pipeline
    watch = app.state.watch
    refreshed = await run_in_threadpool(pipeline.refresh)
    # A rebuild by `rag index`, or an upload to `default` (which refreshed the pipeline itself): the watch
    # starts again from the index's files.
    if refreshed or (watch is not None and watch.indexed != pipeline.store.file_hashes()):
        app.state.watch = await run_in_threadpool(pipeline.store.corpus_watch, settings)


def uvicorn_limits() -> dict:
    """Connection limits for uvicorn: idle keep-alive connections close after 5 s, and past 64 requests or
    connections at once new ones get a 503 at once instead of queueing without end."""
    return {"timeout_keep_alive": 5, "limit_concurrency": 64, "timeout_graceful_shutdown": 10}


def is_loopback(bind: str) -> bool:
    """Whether an address to bind is this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    try:
        return bind == "localhost" or ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(bind: str, given: list[str] | None = None) -> list[str] | None:
    """The Host names to answer: those given, else on a loopback bind the loopback names (and the address
    bound), else any (None: behind a proxy the public name is not known here)."""
    if given:
        return list(given)
    if not is_loopback(bind):
        return None
    shown = f"[{bind.strip('[]')}]" if ":" in bind else bind
    return sorted({*LOOPBACK_HOSTS, shown})


#: The environment variable through which `rag serve --workers N` hands its checked settings to each worker.
SERVE_ENV = "RAG_SERVE"


def default_workers() -> int:
    """Worker processes for `rag serve` when not given: one per two cores (each with that many threads)."""
    import os

    return max(1, (os.cpu_count() or 1) // 2)


def served_app() -> FastAPI:
    """The app each worker of `rag serve --workers N` builds (uvicorn's factory): the settings and options
    the parent process checked (and indexed, and measured the runtime for), read from $RAG_SERVE; each
    worker loads its own copy of the models."""
    import json
    import os

    from rag.console import SafeFormatter

    config = json.loads(os.environ[SERVE_ENV])
    logging.basicConfig(level=logging.INFO)
    logging.getLogger().handlers[0].setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return create_app(Settings(**config["settings"]), rebuild=False, allowed_hosts=config["allowed_hosts"],
                      public=config["public"], keys_required=config["keys_required"],
                      writable_default=config["writable_default"], watch=config.get("watch", False))


def app_from_env() -> FastAPI:
    """Factory for `uvicorn rag.service.server:app_from_env --factory --workers N` (RAG_DOCS, RAG_INDEX set the folders;
    RAG_ALLOWED_HOSTS, comma-separated, the Host names answered: default the loopback names)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import os

    given = [h.strip() for h in os.environ.get("RAG_ALLOWED_HOSTS", "").split(",") if h.strip()]
    return create_app(Settings(), rebuild=False, allowed_hosts=allowed_hosts_for("127.0.0.1", given))
