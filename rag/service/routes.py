"""The HTTP routes: asking (POST /ask, /collections/{name}/ask), reading documents, the page, /health, and
managing collections (create, list, delete; upload, list and delete documents). Each route is a thin
adapter: the work is the pipeline's and rag.service.catalog'. Every route on a collection takes its name
through rag.service.access (the key's collections), as a dependency."""
from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from rag.service.access import Access, key_access, managing, open_watch, reachable, reachable_query
from rag.service.catalog import DEFAULT, Collections
from rag.service.collection import EMPTY, Collection
from rag.service.feedback import DocumentSpan, check_cited, check_span, reader_version
from rag.service.schema import (
    AskRequest,
    AskResponse,
    CollectionInfo,
    DocumentInfo,
    DocumentResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    UploadResponse,
)

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
#: What any route on a collection may answer besides its own statuses (/openapi.json names every status given).
ERRORS = {400: {"description": "The Host header names a host this server does not answer, or the body cannot be "
                               "parsed (JSON that is not UTF-8, malformed multipart)"},
          401: {"description": "An API key is needed"},
          403: {"description": "The key may only read (or, to create or delete a collection, does not reach every one)"},
          404: {"description": "No such collection or document, or a collection the key does not reach"},
          422: {"description": "Invalid request"},
          503: {"description": "The collection is still loading after the server started, or its index database is "
                               "unreachable or slow: ask again after Retry-After seconds",
                "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}}}
#: What a route that takes a body may answer besides (rag.service.middleware.BodyLimits).
BODY_ERRORS = {408: {"description": "The body was not received in full within the deadline"},
               413: {"description": "The body is over the limit (16 KiB; an upload's, the file size limit)"}}
#: A question or feedback on a collection that holds no document yet.
EMPTY_ERROR = {409: {"description": "The collection holds no documents yet"}}

router = APIRouter()


class SecuredStatic(StaticFiles):
    """The page's static files, with the page's security headers."""

    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


def _collections(request: Request) -> Collections:
    return request.app.state.collections


async def _collection(request: Request, name: str) -> Collection:
    """A collection by a name rag.service.access has checked."""
    return await run_in_threadpool(_collections(request).get, name)


# -- asking -------------------------------------------------------------------------------------------------

async def _ask(request: Request, body: AskRequest, name: str) -> AskResponse:
    collection = await _collection(request, name)
    if name == DEFAULT:
        await request.app.state.take_up_rebuilds()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    answer = await run_in_threadpool(collection.ask, body.question, body.top_k, body.sources, timings)
    request.app.state.metrics.answered(answer, timings, time.perf_counter() - started)
    response = AskResponse.from_answer(answer)
    if body.sources is not None and not answer.passages:
        response.warnings.append(f"no document of {name} matches sources {body.sources}")
    if name == DEFAULT:
        changes = await request.app.state.corpus_changes()
        stale = {c.source for c in response.citations} & changes.keys()
        response.warnings += [f"{source} was {changes[source]} since the index was built: the citation may no "
                              "longer match the file; rebuild with `rag index`" for source in sorted(stale)]
    return response


@router.post("/ask", response_model=AskResponse, summary="Answer a question from a collection (default: `default`)",
             responses={**ERRORS, **BODY_ERRORS, **EMPTY_ERROR})
async def ask(body: AskRequest, request: Request, access: Access = Depends(key_access)) -> AskResponse:
    return await _ask(request, body, access.check(body.collection or DEFAULT))


@router.post("/collections/{name}/ask", response_model=AskResponse, summary="Answer a question from this collection",
             responses={**ERRORS, **BODY_ERRORS, **EMPTY_ERROR})
async def ask_collection(body: AskRequest, request: Request, name: str = Depends(reachable)) -> AskResponse:
    if body.collection not in (None, "", name):
        raise HTTPException(status_code=422, detail=f"collection: the body names {body.collection!r}, the path {name!r}")
    return await _ask(request, body, name)


# -- feedback and metrics ----------------------------------------------------------------------------------

async def _feedback(request: Request, body: FeedbackRequest, name: str, access: Access) -> FeedbackResponse:
    state = request.app.state
    collection = await _collection(request, name)
    if collection.pipeline is None:
        raise HTTPException(status_code=409, detail=EMPTY)
    pipeline = collection.pipeline
    await run_in_threadpool(state.feedback_limits.check, state.feedback, name, access.key_name)
    cited = DocumentSpan(body.cited.source, body.cited.start, body.cited.end) if body.cited else None
    if cited is not None:
        await run_in_threadpool(check_cited, cited, body.answer, pipeline.documents)
    correct = DocumentSpan(body.correct.source, body.correct.start, body.correct.end) if body.correct else None
    quote = await run_in_threadpool(check_span, correct, pipeline.documents) if correct else None
    record = await run_in_threadpool(
        state.feedback.add, name, body.question, body.answer, body.score, cited,
        reader_version(pipeline.reader), body.verdict, correct, quote, access.key_name)
    state.metrics.feedback.labels(body.verdict).inc()
    return FeedbackResponse(id=record)


FEEDBACK_ERRORS = {**ERRORS, **BODY_ERRORS, **EMPTY_ERROR,
                   429: {"description": "Too many posts from this key in a minute, or the collection's cap reached"}}


@router.post("/feedback", status_code=201, response_model=FeedbackResponse, responses=FEEDBACK_ERRORS,
             summary="Say whether an answer (or an abstention) was right; mark where the right words stand")
async def feedback(body: FeedbackRequest, request: Request, access: Access = Depends(key_access)) -> FeedbackResponse:
    return await _feedback(request, body, access.check(body.collection or DEFAULT), access)


@router.post("/collections/{name}/feedback", status_code=201, response_model=FeedbackResponse, responses=FEEDBACK_ERRORS,
             summary="Feedback on an answer of this collection")
async def feedback_collection(body: FeedbackRequest, request: Request, name: str = Depends(reachable),
                              access: Access = Depends(key_access)) -> FeedbackResponse:
    if body.collection not in (None, "", name):
        raise HTTPException(status_code=422, detail=f"collection: the body names {body.collection!r}, the path {name!r}")
    return await _feedback(request, body, name, access)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, access: Access = Depends(key_access)) -> Response:
    """Prometheus text format: requests, latency, answers and abstentions, feedback, collections, runtimes.
    They count every collection (by name in the collection gauges), so only a '*' key reads them."""
    access.check_everywhere("GET /metrics (it counts every collection)")
    state = request.app.state
    body = await run_in_threadpool(state.metrics.render, state.collections, state.pipeline)
    return Response(content=body, media_type=state.metrics.content_type)


# -- documents and the page ---------------------------------------------------------------------------------

@router.get("/api/documents/{source:path}", response_model=DocumentResponse, responses=ERRORS,
            summary="The indexed text of a document (citations' offsets index it)")
async def document_text(source: str, request: Request, collection: str = Depends(reachable_query)) -> DocumentResponse:
    # A lookup among indexed sources (never a path on disk), off the event loop: it may query a database.
    found = await _collection(request, collection)
    document = await run_in_threadpool(found.pipeline.documents.get, source) if found.pipeline else None
    if document is None:
        raise HTTPException(status_code=404, detail="no such document in the index")
    return DocumentResponse(source=document.source, text=document.text, format=document.format,
                            pages=list(document.pages), ocr_pages=list(document.ocr_pages))


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The web page (rag/service/web/): plain HTML, CSS and one script, nothing from a CDN."""
    return FileResponse(WEB_DIR / "index.html", headers=PAGE_HEADERS)


@router.get("/documents/{source:path}", include_in_schema=False)
async def document_page(source: str, request: Request, collection: str = Query(DEFAULT)) -> FileResponse:
    """The page in document mode. Without keys only a source of the index exists here (no file is read);
    with keys the page cannot present one yet, so it is served and its API call is what is checked."""
    if not request.app.state.keys.any():
        found = await _collection(request, collection)
        if found.pipeline is None or not await run_in_threadpool(found.pipeline.documents.__contains__, source):
            raise HTTPException(status_code=404, detail="no such document in the index")
    return FileResponse(WEB_DIR / "index.html", headers=PAGE_HEADERS)


@router.get("/health", response_model=HealthResponse, summary="Readiness, corpus size and models in use",
            responses={400: {"description": "The Host header names a host this server does not answer"}})
async def health(request: Request) -> HealthResponse:
    """Open without a key: once keys exist it names no document, folder or collection (rag.service.access.open_watch)."""
    state = request.app.state
    await state.take_up_rebuilds()
    changes = await state.corpus_changes()
    keys_required = await run_in_threadpool(state.keys.any)
    watch = state.watcher.describe() if getattr(state, "watcher", None) is not None else None
    loading = state.collections.loading()
    return HealthResponse(
        status="loading" if loading else "stale" if changes else "ok",
        loading=[] if keys_required else loading,
        corpus_changes=[] if keys_required else [f"{source} {what}" for source, what in sorted(changes.items())],
        collections=len(await run_in_threadpool(state.collections.names)),
        keys_required=keys_required,
        watch=open_watch(watch) if watch is not None and keys_required else watch,
        **await run_in_threadpool(state.pipeline.describe),
    )


# -- collections ----------------------------------------------------------------------------------------------

@router.get("/collections", response_model=list[CollectionInfo], summary="The collections the key reaches, with their counts",
            responses={k: ERRORS[k] for k in (400, 401)})
async def list_collections(request: Request, access: Access = Depends(key_access)) -> list[CollectionInfo]:
    collections = _collections(request)

    def rows():  # a collection deleted while listed is left out, not an error
        return [CollectionInfo(name=n, documents=d, passages=p, loading=loading)
                for n, d, p, loading in collections.listing() if access.reaches(n)]

    return await run_in_threadpool(rows)


@router.put("/collections/{name}", status_code=201, response_model=CollectionInfo,
            responses={**ERRORS, 200: {"model": CollectionInfo, "description": "It exists already: nothing changed"}},
            summary="Create a collection (201), or find it there already (200)")
async def create_collection(request: Request, response: Response, name: str = Depends(managing)) -> CollectionInfo:
    collection, created = await run_in_threadpool(_collections(request).create, name)
    if not created:
        response.status_code = 200
    documents, passages = await run_in_threadpool(collection.counts)
    return CollectionInfo(name=name, documents=documents, passages=passages)


@router.delete("/collections/{name}", status_code=204, responses={**ERRORS, 409: {"description": "`default` stays"}},
               summary="Delete a collection, its documents and its index")
async def delete_collection(request: Request, name: str = Depends(managing)) -> Response:
    await run_in_threadpool(_collections(request).delete, name)
    return Response(status_code=204)


@router.get("/collections/{name}/documents", response_model=list[DocumentInfo], responses=ERRORS,
            summary="The documents of a collection")
async def list_documents(request: Request, name: str = Depends(reachable)) -> list[DocumentInfo]:
    return [DocumentInfo(**row) for row in await run_in_threadpool(_collections(request).documents, name)]


@router.post("/collections/{name}/documents", status_code=201, response_model=UploadResponse,
             summary="Upload a document (multipart field `file`, optional `path` sub-folder); answerable once this returns",
             responses={**ERRORS, **BODY_ERRORS,
                        409: {"description": "It exists (send ?replace=true), its name clashes with a file or folder "
                                             "there, or the collection is `default`, which the server does not change "
                                             "unless started with --writable-default"},
                        413: {"description": "Over the file size limit, or it would expand past what one document "
                                             "may (text, passages, pages, unpacked bytes)"},
                        422: {"description": "Invalid request: a name or format rag does not take, a file that cannot "
                                             "be converted, or one that holds no text (an empty file)"}})
async def upload_document(request: Request, name: str = Depends(reachable), file: UploadFile = File(...),
                          path: str | None = Form(None), replace: bool = Query(False)) -> UploadResponse:
    data = await file.read()
    result = await run_in_threadpool(_collections(request).upload, name, file.filename or "", data, path, replace)
    return UploadResponse(**result)


@router.delete("/collections/{name}/documents/{source:path}", status_code=204,
               responses={**ERRORS, 409: {"description": "The collection is `default`, which the server does not "
                                                         "change unless started with --writable-default"}},
               summary="Delete a document; no answer cites it once this returns")
async def delete_document(source: str, request: Request, name: str = Depends(reachable)) -> Response:
    await run_in_threadpool(_collections(request).remove, name, source)
    return Response(status_code=204)
