"""The MCP server, through the official SDK's own client: over stdio (`rag mcp`, a child process) and over
streamable HTTP at /mcp on a real server with keys. Real models, the seed documents."""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import anyio
import httpx
import pytest

mcp = pytest.importorskip("mcp")

from mcp import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

from helpers import REPO, SEEDS, serving  # noqa: E402

pytestmark = pytest.mark.slow  # `rag mcp` child processes and a real server

QUESTION = "Who did Anthropic hire to lead its infrastructure effort?"
UNANSWERABLE = "What is the boiling point of tungsten in the Andromeda galaxy?"


def _payload(result) -> object:
    """A tool result's structured content (the SDK wraps non-object returns in {"result": …})."""
    data = result.structured_content if hasattr(result, "structured_content") else result.structuredContent
    if data is None:
        data = json.loads(result.content[0].text)
    return data.get("result", data) if isinstance(data, dict) and set(data) == {"result"} else data


def _is_error(result) -> bool:
    return bool(getattr(result, "is_error", None) or getattr(result, "isError", None))


async def _exercise(session: ClientSession) -> dict:
    """What every transport must do: the three tools, an abstention, a bad argument, the cited text."""
    await session.initialize()
    tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == {"ask", "search", "list_documents"}
    assert "do not say" in tools["ask"].description
    answer = _payload(await session.call_tool("ask", {"question": QUESTION}))
    assert answer["answer"] == "Eric Boyd" and not answer["abstained"] and 0 < answer["score"] <= 1
    cite = answer["citations"][0]
    text = (await session.read_resource(cite["uri"])).contents[0].text
    assert text[cite["start"] : cite["end"]] == "Eric Boyd"  # the offsets index the resource's text
    none = _payload(await session.call_tool("ask", {"question": UNANSWERABLE}))
    assert none["answer"] is None and none["abstained"] and "do not say" in none["message"] and none["citations"] == []
    passages = _payload(await session.call_tool("search", {"query": QUESTION, "top_k": 3}))
    assert len(passages) == 3 and any("Eric Boyd" in p["text"] for p in passages)
    documents = _payload(await session.call_tool("list_documents", {}))
    assert sorted(d["source"] for d in documents) == sorted(p.name for p in SEEDS.glob("*.txt"))
    bad = await session.call_tool("ask", {"question": QUESTION, "top_k": "many"})
    assert _is_error(bad)  # a tool error the agent can read, not a crash: the session goes on
    empty = await session.call_tool("ask", {"question": "   "})
    assert _is_error(empty) and "question" in empty.content[0].text.lower()
    refused = await session.call_tool("ask", {"question": QUESTION, "collection": "nope"})
    assert _is_error(refused) and "no collection" in refused.content[0].text
    return answer


def test_stdio_server_answers_abstains_and_refuses_bad_arguments(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(SEEDS, docs)
    params = StdioServerParameters(command=sys.executable, args=[
        "-m", "rag.cli", "mcp", "--docs", str(docs), "--index", str(tmp_path / "index"), "--data", str(tmp_path / "data")],
        cwd=str(REPO), env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})

    async def main():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            return await _exercise(session)

    answer = anyio.run(main)
    assert answer["citations"][0]["source"] == "001_fa8838ea44d7c2c5.txt"


@pytest.fixture()
def live_server(settings, pipeline, tmp_path):
    """A real server over the loaded pipeline, with one read key."""
    from rag.service.keys import KeyStore
    from rag.service.server import create_app

    served = dataclasses.replace(settings, data_dir=tmp_path / "data")
    token = KeyStore(served.data_dir).add("agent", "read")
    with serving(create_app(served, pipeline=pipeline, rebuild=False)) as base:
        yield f"{base}/mcp", token


def test_http_server_behind_keys(live_server):
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    url, token = live_server

    async def main(headers):
        async with httpx2.AsyncClient(headers=headers, timeout=120) as http, \
                streamable_http_client(url, http_client=http) as streams, ClientSession(streams[0], streams[1]) as session:
            return await _exercise(session)

    assert anyio.run(main, {"Authorization": f"Bearer {token}"})["answer"] == "Eric Boyd"
    with pytest.raises(Exception, match="error"):  # no key: the server's 401 ends the session before any tool runs
        anyio.run(main, {})
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    plain = httpx.post(url, json=hello, headers={"Accept": "application/json, text/event-stream"}, timeout=60)
    assert plain.status_code == 401 and "API key" in plain.json()["detail"]
