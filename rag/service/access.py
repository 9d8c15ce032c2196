"""Which collections a request may use: those its API key reaches (rag.service.keys), checked here and nowhere else.

Every route on a collection gets its name through a FastAPI dependency of this module: `reachable` (the
path's `{name}`), `reachable_query` (`?collection=`), `managing` (creating or deleting one), or `Access.check`
for a name sent in a JSON body (`"collection"` of /ask and /feedback); the MCP tools at /mcp, which are not
FastAPI routes, ask `reaches_in`. A collection the key does not reach
is a 404 with the body of one that does not exist, so a key cannot probe for other teams' names."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Query, Request

from rag.ingest.names import DEFAULT
from rag.service.collection import CollectionError, missing
from rag.service.keys import Key
from rag.service.middleware import KEY_SCOPE


class ForbiddenError(CollectionError):
    """The key reaches the collection, but not every one, as this route needs."""

    status = 403


@dataclass(frozen=True)
class Access:
    """What the request's key reaches. `key` None: no key is in use (a loopback server without keys) or the
    route is open (GET /metrics with --metrics-public), and every collection is reached."""

    key: Key | None

    @property
    def key_name(self) -> str | None:
        return self.key.name if self.key is not None else None

    @property
    def everywhere(self) -> bool:
        return self.key is None or self.key.everywhere

    def reaches(self, collection: str) -> bool:
        return self.key is None or self.key.reaches(collection)

    def check(self, collection: str) -> str:
        """The name, when the key reaches it; else the 404 of a collection that does not exist."""
        if not self.reaches(collection):
            raise missing(collection)
        return collection

    def visible(self, names: list[str]) -> list[str]:
        """The names it reaches, of those given (GET /collections lists no other)."""
        return [n for n in names if self.reaches(n)]

    def check_everywhere(self, what: str) -> None:
        """A 403 unless the key reaches every collection: `what` (making or deleting collections, the metrics
        of all of them) is an operator's."""
        if not self.everywhere:
            raise ForbiddenError(f"{what} needs a key that reaches every collection (--collections '*'); the key "
                                 f"{self.key_name!r} reaches {', '.join(self.key.collections)}")


#: What the open GET /health may tell of a --watch server once keys are in use: counts and times, never a
#: collection's name, folder or last error (which names its files).
OPEN_WATCH = ("mode", "pending", "last_synced", "synced_files", "batches", "syncing", "settle_seconds")


def open_watch(watch: dict) -> dict:
    """rag.service.watch's report, cut to what a caller without a key may read."""
    return {k: watch[k] for k in OPEN_WATCH if k in watch}


def key_access(request: Request) -> Access:
    """The dependency every route that touches a collection, or counts them, takes."""
    return Access(request.scope.get(KEY_SCOPE))


def reachable(name: str, access: Access = Depends(key_access)) -> str:
    """The path's collection, when the key reaches it (else 404)."""
    return access.check(name)


def reachable_query(access: Access = Depends(key_access),
                    collection: str = Query(DEFAULT, description="The collection (default `default`).")) -> str:
    """The `?collection=` of the document routes, when the key reaches it (else 404)."""
    return access.check(collection)


def managing(name: str, access: Access = Depends(key_access)) -> str:
    """A collection to create or delete: 404 unless the key reaches it, 403 unless it reaches every one."""
    access.check(name)
    access.check_everywhere("creating or deleting a collection")
    return name


def reaches_in(scope: dict | None, collection: str) -> bool:
    """Whether the key of a request's ASGI scope reaches `collection`: the check of the MCP tools at /mcp
    (rag.service.mcp), the same rule as Access.check. No scope (which an HTTP call always has) reaches nothing."""
    return scope is not None and Access(scope.get(KEY_SCOPE)).reaches(collection)
