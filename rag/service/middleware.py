"""The server's ASGI middleware: body limits and deadlines (BodyLimits), API keys (Auth) and one access-log
line per request (AccessLog). Each wraps the app below it and knows nothing of the routes but their paths."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time

from fastapi import HTTPException

from rag.config import Settings
from rag.service.keys import KeyStore

log = logging.getLogger("rag.service.server")

#: Largest request body accepted (a 1,000-character question needs far less).
MAX_BODY_BYTES = 16 * 1024
#: The upload route, whose body is a file: its limit is Settings.max_file_bytes, not MAX_BODY_BYTES.
UPLOAD_PATH = re.compile(r"/collections/[^/]+/documents/?")
#: Where Auth leaves the key a request came with (rag.service.keys.Key: its name for the access log, its collections
#: for rag.service.access); absent when no key is in use or the route is open.
KEY_SCOPE = "rag.key"


class BodyLimits:
    """ASGI middleware: 413 for a body larger than `limit` bytes (declared or streamed), 408 for a body
    not received in full within `deadline` seconds (a client that declares 1,000 bytes and sends 17, or
    one byte every few seconds, would otherwise hold a connection and a worker for as long as it likes).
    Once the body is complete, later receive() calls (a response watching for a disconnect) pass through."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES, deadline: float = Settings.body_deadline_seconds,
                 uploads: tuple[int, float] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.deadline = deadline
        self.uploads = uploads  # (limit, deadline) of the upload route: a file, not a question

    def limits(self, scope) -> tuple[int, float]:
        """The body limit and deadline of this request's route."""
        if self.uploads and scope["method"] == "POST" and UPLOAD_PATH.fullmatch(scope["path"]):
            return self.uploads
        return self.limit, self.deadline

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, deadline_seconds = self.limits(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._reject(send, _TooLarge(limit))
        seen = 0
        complete = False
        responded = False
        deadline = asyncio.get_running_loop().time() + deadline_seconds

        async def limited_receive():
            nonlocal seen, complete
            if complete:
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.001))
            except asyncio.TimeoutError:
                raise _TooSlow(deadline_seconds) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
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
        await _json(send, err.status_code, err.detail, [(b"connection", b"close")])  # the rest of the body is not read


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

    def __init__(self, app, metrics=None) -> None:
        self.app = app
        self.metrics = metrics  # rag.service.metrics.Metrics: requests counted by route template and status

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
            key = getattr(scope.get(KEY_SCOPE), "name", "-")  # the key's name (never its token), set by Auth
            if self.metrics is not None:  # the route's template, not the path: a bounded set of labels
                self.metrics.requests.labels(getattr(scope.get("route"), "path", "unmatched"), str(status)).inc()
            log.info("%s:%s %s %s %d %.1fms key=%s", client[0], client[1], scope["method"], path, status,
                     (time.perf_counter() - started) * 1000, key)


#: Routes open without a key: the health check and the page's own files (the page asks for a token).
OPEN_PATHS = re.compile(r"/health|/|/static/.*|/documents/.*")
#: Routes that change something: a write key's (the rest need a read key).
WRITE_ROUTES = (("PUT", re.compile(r"/collections/[^/]+/?")), ("DELETE", re.compile(r"/collections/.+")),
                ("POST", UPLOAD_PATH))


class Auth:
    """ASGI middleware: when any key exists (rag keys add), every route but GET /health and the page's files
    needs `Authorization: Bearer TOKEN`: none or an unknown one is a 401 (WWW-Authenticate: Bearer), a read
    key on a write route a 403. Keys added or revoked on disk take effect at the next request. The key is
    left in the scope: the collections it reaches are checked by the routes (rag.service.access)."""

    def __init__(self, app, keys: KeyStore, public: re.Pattern | None = None, required: bool = False) -> None:
        self.app = app
        self.keys = keys
        self.public = public  # further routes open without a key (/metrics with --metrics-public)
        self.required = required  # beyond loopback: no key at all (the last one revoked) opens nothing

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and _cross_site(headers):
            return await _json(send, 403, "a request from another site's page is refused (Origin or Sec-Fetch-Site)")
        if self._open(scope) or (not self.required and not self.keys.any()):
            return await self.app(scope, receive, send)
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        key = self.keys.check(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if key is None:
            why = "an API key is needed: send Authorization: Bearer TOKEN" if not token else "unknown or revoked API key"
            return await _json(send, 401, why, [(b"www-authenticate", b'Bearer realm="rag"')])
        need = "write" if any(scope["method"] == m and p.fullmatch(scope["path"]) for m, p in WRITE_ROUTES) else "read"
        if not key.allows(need):
            return await _json(send, 403, f"the key {key.name!r} may only read; this route needs a write key")
        scope[KEY_SCOPE] = key  # which collections it reaches is rag.service.access's to check, per route
        return await self.app(scope, receive, send)

    def _open(self, scope) -> bool:
        path = scope["path"]
        if self.public is not None and self.public.fullmatch(path):
            return True
        return scope["method"] in ("GET", "HEAD") and OPEN_PATHS.fullmatch(path) is not None


def _cross_site(headers: dict) -> bool:
    """Whether a browser says this request comes from another site's page: a form or no-cors fetch there
    could otherwise upload into a local server with no keys (CSRF). Non-browser clients send neither."""
    if headers.get(b"sec-fetch-site", b"").lower() == b"cross-site":
        return True
    origin = headers.get(b"origin")
    if origin is None or origin == b"null":
        return origin == b"null"
    host = headers.get(b"host", b"").decode("latin-1").lower()
    return origin.decode("latin-1").lower().split("://", 1)[-1].rstrip("/") != host


async def _json(send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
