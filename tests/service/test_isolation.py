"""One team's key reaches only its collections, through a real `rag serve`: three keys on two collections
(team A's read key, team B's write key, an operator's '*' key) on every route that touches a collection
(list, read, ask, upload, delete, feedback, collections made and deleted, /metrics, the MCP tools); a collection a key does
not reach is a 404 with the very body of one that does not exist; keys stored before keys named collections
reach every one."""
import json
import os
import sqlite3

import pytest

from helpers import cli
from helpers.rag_server import FERRY, HARBOUR, Server

pytestmark = pytest.mark.slow  # every test talks to a `rag serve` child process

HARBOUR_Q = "Who is the harbour master of Inis Mor?"
FERRY_Q = "Who is the captain of the ferry to Inis Mor?"


def _token(out) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tmp_path_factory.mktemp("isolation") / "data"


@pytest.fixture(scope="module")
def keys(data):
    ops = cli("keys", "add", "ops", "--scope", "write", "--data", data)
    assert "every collection ('*'" in ops.stdout  # no --collections: '*', and it says so
    team_a = cli("keys", "add", "a-reader", "--scope", "read", "--collections", "team-a", "--data", data)
    assert "only the collections team-a" in team_a.stdout
    team_b = cli("keys", "add", "b-writer", "--scope", "write", "--collections", "team-b", "--data", data)
    return {"ops": _token(ops), "a": _token(team_a), "b": _token(team_b)}


@pytest.fixture(scope="module")
def server(data, keys):
    s = Server(data)
    try:
        for name, source, text in (("team-a", "harbour.txt", HARBOUR), ("team-b", "ferry.txt", FERRY)):
            assert s.call("PUT", f"/collections/{name}", keys["ops"]).status_code == 201
            assert s.upload(name, source, text, keys["ops"]).status_code == 201
        yield s
    finally:
        s.stop()


def _absent(server, token: str, name: str, method: str, path: str, **kwargs) -> None:
    """The request on collection `name` gets a 404 whose body is exactly that of a collection that does not
    exist: the same request naming one that does not is answered alike."""
    r = server.call(method, path, token, **kwargs)
    assert r.status_code == 404, (method, path, r.status_code, r.text)
    assert r.json() == {"detail": f"no collection named {name!r}"}, r.text
    if "json" in kwargs:
        kwargs["json"] = json.loads(json.dumps(kwargs["json"]).replace(f'"{name}"', '"no-such-one"'))
    ghost = server.call(method, path.replace(name, "no-such-one"), token, **kwargs)
    assert ghost.status_code == 404 and ghost.json() == {"detail": "no collection named 'no-such-one'"}, ghost.text


def test_the_cli_keeps_each_keys_collections(data, keys):
    listed = cli("keys", "list", "--data", data).stdout
    rows = {line.split()[0]: line.split() for line in listed.splitlines()[1:]}
    assert "collections" in listed.splitlines()[0]
    assert rows["ops"][2] == "*" and rows["a-reader"][2] == "team-a" and rows["b-writer"][2] == "team-b"
    for bad in ("", "Team-A", "a,*", "../x"):
        out = cli("keys", "add", "bad", "--scope", "read", "--collections", bad, "--data", data)
        assert out.returncode != 0 and "--collections" in out.stderr and "Traceback" not in out.stderr, (bad, out.stderr)
    assert "bad" not in cli("keys", "list", "--data", data).stdout


def test_collections_are_listed_only_where_the_key_reaches(server, keys):
    names = {k: [c["name"] for c in server.call("GET", "/collections", t).json()] for k, t in keys.items()}
    assert names == {"ops": ["default", "team-a", "team-b"], "a": ["team-a"], "b": ["team-b"]}


def test_documents_are_read_only_in_reached_collections(server, keys):
    a = keys["a"]
    assert [d["source"] for d in server.call("GET", "/collections/team-a/documents", a).json()] == ["harbour.txt"]
    assert server.call("GET", "/api/documents/harbour.txt?collection=team-a", a).json()["text"] == HARBOUR.decode()
    _absent(server, a, "team-b", "GET", "/collections/team-b/documents")
    _absent(server, a, "team-b", "GET", "/api/documents/ferry.txt?collection=team-b")
    _absent(server, a, "default", "GET", "/api/documents/001_fa8838ea44d7c2c5.txt?collection=default")
    assert server.call("GET", "/api/documents/001_fa8838ea44d7c2c5.txt", a).status_code == 404  # `default`: not its
    _absent(server, keys["b"], "team-a", "GET", "/api/documents/harbour.txt?collection=team-a")
    assert server.call("GET", "/api/documents/ferry.txt?collection=team-b", keys["ops"]).status_code == 200
    page = server.call("GET", "/documents/ferry.txt?collection=team-b", a)  # the page itself holds no document
    assert page.status_code == 200 and "Nora Walsh" not in page.text


def test_questions_are_answered_only_from_reached_collections(server, keys):
    a = keys["a"]
    r = server.call("POST", "/collections/team-a/ask", a, json={"question": HARBOUR_Q})
    assert r.status_code == 200 and r.json()["answer"] == "Sean Ryan"
    _absent(server, a, "team-b", "POST", "/collections/team-b/ask", json={"question": FERRY_Q})
    _absent(server, a, "team-b", "POST", "/ask", json={"question": FERRY_Q, "collection": "team-b"})
    _absent(server, a, "default", "POST", "/ask", json={"question": FERRY_Q, "collection": "default"})
    assert server.call("POST", "/ask", a, json={"question": FERRY_Q}).status_code == 404  # `default` by default
    r = server.call("POST", "/ask", keys["ops"], json={"question": FERRY_Q, "collection": "team-b"})
    assert r.status_code == 200 and r.json()["answer"] == "Nora Walsh"


def test_uploads_and_deletes_only_in_reached_collections(server, keys, data):
    b = keys["b"]
    _absent(server, b, "team-a", "POST", "/collections/team-a/documents", files={"file": ("planted.txt", b"Eve.\n")})
    assert not (data / "collections" / "team-a" / "docs" / "planted.txt").exists()
    _absent(server, b, "team-a", "DELETE", "/collections/team-a/documents/harbour.txt")
    assert (data / "collections" / "team-a" / "docs" / "harbour.txt").is_file()
    assert server.upload("team-a", "mine.txt", HARBOUR, keys["a"]).status_code == 403  # a read key, on its own
    assert server.upload("team-b", "extra.txt", b"The ferry's cook is Mary Kane.\n", b).status_code == 201
    assert server.call("DELETE", "/collections/team-b/documents/extra.txt", b).status_code == 204
    assert [d["source"] for d in server.call("GET", "/collections/team-a/documents", keys["a"]).json()] == ["harbour.txt"]


def test_feedback_goes_only_to_reached_collections(server, keys, data):
    a = keys["a"]
    verdict = {"question": FERRY_Q, "answer": None, "verdict": "wrong"}
    _absent(server, a, "team-b", "POST", "/feedback", json={**verdict, "collection": "team-b"})
    _absent(server, a, "team-b", "POST", "/collections/team-b/feedback", json=verdict)
    assert server.call("POST", "/feedback", a, json=verdict).status_code == 404  # `default`
    assert server.call("POST", "/collections/team-a/feedback", a, json=verdict).status_code == 201
    rows = sqlite3.connect(data / "feedback.sqlite").execute("SELECT collection, key FROM feedback").fetchall()
    assert rows == [("team-a", "a-reader")]


def test_only_an_every_collection_write_key_makes_or_deletes_collections(server, keys, data):
    b, ops = keys["b"], keys["ops"]
    _absent(server, b, "team-a", "DELETE", "/collections/team-a")
    _absent(server, b, "team-c", "PUT", "/collections/team-c")
    assert (data / "collections" / "team-a" / "docs" / "harbour.txt").is_file()
    own = server.call("DELETE", "/collections/team-b", b)  # its own, but it is not an operator's key
    assert own.status_code == 403 and "--collections '*'" in own.json()["detail"]
    assert server.call("PUT", "/collections/team-b", b).status_code == 403
    assert server.call("PUT", "/collections/team-a", keys["a"]).status_code == 403  # a read key
    assert server.call("PUT", "/collections/scratch", ops).status_code == 201
    assert server.call("DELETE", "/collections/scratch", ops).status_code == 204
    assert [c["name"] for c in server.call("GET", "/collections", ops).json()] == ["default", "team-a", "team-b"]


def test_metrics_are_for_keys_that_reach_every_collection(server, keys):
    for team, other in (("a", "team-b"), ("b", "team-a")):
        r = server.call("GET", "/metrics", keys[team])
        assert r.status_code == 403 and "--collections '*'" in r.json()["detail"]
        assert other not in r.text and "rag_" not in r.text
    ops = server.call("GET", "/metrics", keys["ops"])
    assert ops.status_code == 200 and 'rag_collection_documents{collection="team-b"}' in ops.text


def test_a_key_stored_before_keys_named_collections_reaches_every_one(server, data):
    token = _token(cli("keys", "add", "legacy", "--scope", "read", "--data", data))
    path = data / "keys.json"
    stored = json.loads(path.read_text())
    for key in stored["keys"]:
        if key["name"] == "legacy":
            del key["collections"]  # as a keys.json written before this field existed
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stored))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    assert [line.split()[2] for line in cli("keys", "list", "--data", data).stdout.splitlines() if line.startswith("legacy")] == ["*"]
    names = [c["name"] for c in server.call("GET", "/collections", token).json()]
    assert names == ["default", "team-a", "team-b"]
    assert server.call("GET", "/metrics", token).status_code == 200
    r = server.call("POST", "/collections/team-b/ask", token, json={"question": FERRY_Q})
    assert r.json()["answer"] == "Nora Walsh"


def test_the_mcp_tools_reach_only_the_keys_collections(server, keys):
    """POST /mcp (the agents' tools, not FastAPI routes) follows the key's collections too."""
    import anyio
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    def text(result) -> str:
        return result.content[0].text if result.content else ""

    async def main():
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {keys['a']}"}, timeout=120) as http, \
                streamable_http_client(server.url + "/mcp", http_client=http) as streams, \
                ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            own = await session.call_tool("list_documents", {"collection": "team-a"})
            assert "harbour.txt" in text(own) and not (getattr(own, "is_error", None) or getattr(own, "isError", None))
            for tool, arguments in (("list_documents", {}), ("ask", {"question": FERRY_Q}),
                                    ("list_documents", {"collection": "team-b"}),
                                    ("ask", {"question": FERRY_Q, "collection": "team-b"}),
                                    ("search", {"query": FERRY_Q, "collection": "team-b"})):
                refused = await session.call_tool(tool, arguments)
                name = arguments.get("collection", "default")
                assert f"no collection named {name!r}" in text(refused) and "Nora Walsh" not in text(refused), (tool, arguments)
            with pytest.raises(Exception, match="no collection named 'team-b'"):
                await session.read_resource("rag://documents/team-b/ferry.txt")

    anyio.run(main)


