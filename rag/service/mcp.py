"""The documents as a tool for agents (Model Context Protocol, the official `mcp` SDK): `ask`, `search` and
`list_documents`, and each document's indexed text as a resource, over stdio (`rag mcp`) or streamable HTTP
at /mcp on `rag serve`, where the same keys and collections apply as on every other route.

An extractive answer is the document's own words with their offsets, or an abstention: the tool
descriptions tell the agent that an abstention means the documents do not say, so it should not guess."""
from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from rag.errors import RagError
from rag.service.catalog import DEFAULT, Collections
from rag.service.schema import AskResponse
from rag.text import checked_question

log = logging.getLogger(__name__)

ABSTAINED = ("The documents do not say: no passage answers this question well enough, so there is no answer. "
             "Do not guess or answer from elsewhere; tell the user the documents do not contain it.")
INSTRUCTIONS = ("Answers questions from the user's documents with their exact words and citations (source file, "
                "character offsets, page, quote). An answer of null is an abstention: the documents do not say. "
                "Read the cited text through the rag://documents/{collection}/{source} resources.")
#: Who may use a collection: (the request's ASGI scope or None on stdio, collection name) -> bool.
Reach = Callable[[dict | None, str], bool]


class ToolRefused(RagError):
    """A tool call the caller may not make, or with arguments it cannot take; shown to the agent as a tool error."""


def document_uri(collection: str, source: str) -> str:
    return f"rag://documents/{quote(collection, safe='')}/{quote(source, safe='/')}"


def build_server(collections: Callable[[], Collections], reach: Reach | None = None):
    """The MCP server over `collections` (a getter: the server's are made in its lifespan); `reach` decides
    which collections the caller may use (None: all, as on stdio)."""
    server = MCPServer(name="rag", instructions=INSTRUCTIONS)

    def open_collection(ctx: Context | None, name: str | None):
        name = name or DEFAULT
        scope = _scope(ctx)
        if reach is not None and not reach(scope, name):
            raise ToolRefused(f"no collection named {name!r}")  # the same words as a missing one: names cannot be probed
        return collections().get(name)

    async def call(fn, *args):
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        except RagError as err:
            raise ToolError(str(err)) from None

    @server.tool(description=(
        "Answer a question from the documents with their exact words. Returns `answer` (a span quoted from a "
        "document) with `citations` (source, start and end character offsets, page, the sentence quoted), or "
        "`answer: null` when the documents do not contain the answer: then the documents do not say, so do not "
        "guess. `score` is the calibrated probability that the answer is right. `sources` limits the search to "
        "file names or globs (e.g. reports/*.pdf); `collection` names a collection (default: default)."))
    async def ask(question: str, ctx: Context, collection: str | None = None, sources: list[str] | None = None,
                  top_k: int | None = None) -> dict:
        def run():
            found = open_collection(ctx, collection)
            return AskResponse.from_answer(found.ask(checked_question(question), top_k, sources)).model_dump()

        body = await call(run)
        out = {"answer": body["answer"], "abstained": body["answer"] is None, "score": body["score"],
               "citations": [{**c, "uri": document_uri(collection or DEFAULT, c["source"])} for c in body["citations"]],
               "warnings": body["warnings"]}
        if out["abstained"]:
            out["message"] = ABSTAINED
        return out

    @server.tool(description=(
        "Find the passages of the documents that best match a query (hybrid keyword and embedding search), "
        "best first, each with its source, character offsets and text. Passages are not answers: use `ask` "
        "for an answer, which abstains when the documents do not say."))
    async def search(query: str, ctx: Context, collection: str | None = None, sources: list[str] | None = None,
                     top_k: int | None = None) -> list[dict]:
        def run():
            found = open_collection(ctx, collection)
            if found.pipeline is None:
                return []
            return [p.to_dict() for p in found.pipeline.search(checked_question(query), top_k, sources)]

        return await call(run)

    @server.tool(description="List the documents of a collection (default: default), each with the resource URI of its text.")
    async def list_documents(ctx: Context, collection: str | None = None) -> list[dict]:
        def run():
            name = collection or DEFAULT
            open_collection(ctx, name)  # the access check
            return [{**row, "uri": document_uri(name, row["source"])} for row in collections().documents(name)]

        return await call(run)

    @server.resource("rag://documents/{collection}/{+source}", name="document", mime_type="text/plain",
                     description="The indexed text of a document: citations' character offsets index this text.")
    async def document(collection: str, source: str, ctx: Context) -> str:
        def run():
            found = open_collection(ctx, collection)
            doc = found.pipeline.documents.get(source) if found.pipeline is not None else None
            if doc is None:
                raise ToolRefused(f"no document {source!r} in the index of {collection!r}")
            return doc.text

        try:
            return await anyio.to_thread.run_sync(run)
        except RagError as err:
            raise ResourceError(str(err)) from None

    return server


def _scope(ctx) -> dict | None:
    """The HTTP request's ASGI scope behind a tool call (None over stdio)."""
    try:
        request = ctx.request_context.request
    except (AttributeError, ValueError):
        return None
    return getattr(request, "scope", None)


def serve_stdio(settings, rebuild: bool = True) -> None:
    """`rag mcp`: the index and models load once, then the server answers on standard input and output
    (logs go to standard error, never stdout, which carries the protocol)."""
    from rag.pipeline.qa import Pipeline

    pipeline = Pipeline.from_settings(settings, rebuild=rebuild)
    found = Collections(settings, pipeline, False)
    try:
        build_server(lambda: found).run("stdio")
    finally:
        found.close()
        pipeline.close()
