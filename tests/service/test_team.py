"""The team service against a real `rag serve` (a child process on a free port): collections, upload and
delete, source filters, API keys, a restart and questions during uploads."""
import json
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import SEEDS, cli
from helpers.rag_server import FERRY, HARBOUR, Server

pytestmark = pytest.mark.slow  # every test talks to a `rag serve` child process


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tmp_path_factory.mktemp("team") / "data"


@pytest.fixture(scope="module")
def server(data):
    s = Server(data)
    yield s
    s.stop()


def test_collections_are_made_listed_and_deleted(server):
    assert server.call("GET", "/collections").json() == [{"name": "default", "documents": 5, "passages": 37, "loading": False}]
    assert server.call("PUT", "/collections/tmp-1").status_code == 201
    assert server.call("PUT", "/collections/tmp-1").status_code == 200
    assert {c["name"] for c in server.call("GET", "/collections").json()} == {"default", "tmp-1"}
    for bad in ("Upper", "a" * 65, "dot.name", "sp ace"):
        assert server.call("PUT", f"/collections/{bad}").status_code in (404, 422), bad
    assert server.call("GET", "/collections/nothing/documents").status_code == 404
    assert server.call("DELETE", "/collections/default").status_code == 409
    assert server.call("DELETE", "/collections/tmp-1").status_code == 204
    assert server.call("GET", "/collections/tmp-1/documents").status_code == 404
    assert server.call("DELETE", "/collections/tmp-1").status_code == 404


def test_an_upload_is_answered_from_at_once_and_a_delete_stops_its_citations(server, data):
    assert server.call("PUT", "/collections/harbour").status_code == 201
    r = server.upload("harbour", "harbour.txt", HARBOUR)
    assert r.status_code == 201 and r.json() == {"source": "harbour.txt", "format": "text", "passages": 1}
    r = server.call("POST", "/collections/harbour/documents", files={"file": ("ferry.txt", FERRY)}, data={"path": "boats"})
    assert r.status_code == 201 and r.json()["source"] == "boats/ferry.txt"
    assert (data / "collections" / "harbour" / "docs" / "boats" / "ferry.txt").read_bytes() == FERRY
    listed = server.call("GET", "/collections/harbour/documents").json()
    assert listed == [{"source": "boats/ferry.txt", "format": "text", "bytes": len(FERRY), "passages": 1},
                      {"source": "harbour.txt", "format": "text", "bytes": len(HARBOUR), "passages": 1}]
    answer = server.call("POST", "/collections/harbour/ask", json={"question": "Who is the harbour master of Inis Mor?"}).json()
    assert answer["answer"] == "Sean Ryan" and answer["citations"][0]["source"] == "harbour.txt"
    same = server.call("POST", "/ask", json={"question": "Who is the harbour master of Inis Mor?", "collection": "harbour"})
    assert same.json()["answer"] == "Sean Ryan"
    assert server.call("DELETE", "/collections/harbour/documents/harbour.txt").status_code == 204
    assert server.call("DELETE", "/collections/harbour/documents/harbour.txt").status_code == 404
    after = server.call("POST", "/collections/harbour/ask", json={"question": "Who is the harbour master of Inis Mor?"}).json()
    assert all(c["source"] != "harbour.txt" for c in after["citations"])
    assert all(p["source"] != "harbour.txt" for p in after["passages"])
    assert not (data / "collections" / "harbour" / "docs" / "harbour.txt").exists()


def test_a_source_filter_restricts_passages_and_citations(server):
    server.call("PUT", "/collections/filtered")
    server.upload("filtered", "harbour.txt", HARBOUR)
    server.upload("filtered", "ferry.txt", FERRY)
    q = "Who is the harbour master of Inis Mor?"
    only_ferry = server.call("POST", "/collections/filtered/ask", json={"question": q, "sources": ["ferry.txt"]}).json()
    assert {p["source"] for p in only_ferry["passages"]} == {"ferry.txt"}
    assert only_ferry["answer"] != "Sean Ryan" and all(c["source"] == "ferry.txt" for c in only_ferry["citations"])
    glob = server.call("POST", "/collections/filtered/ask", json={"question": q, "sources": ["harb*"]}).json()
    assert glob["answer"] == "Sean Ryan" and {p["source"] for p in glob["passages"]} == {"harbour.txt"}
    seeds = server.call("POST", "/ask", json={"question": "Who did Anthropic hire to lead its infrastructure effort?",
                                              "sources": ["004_*"]}).json()
    assert {p["source"] for p in seeds["passages"]} == {"004_81a3bf9f650335dc.txt"}  # every passage of the match, not fewer
    none = server.call("POST", "/collections/filtered/ask", json={"question": q, "sources": ["nothing.txt"]}).json()
    assert none["answer"] is None and "matches sources" in none["warnings"][0]


def test_bad_uploads_are_refused_and_store_nothing(server, data):
    server.call("PUT", "/collections/guarded")
    folder = data / "collections" / "guarded"
    before = sorted(p.relative_to(data.parent) for p in data.parent.rglob("*"))
    for name, path in [("../escape.txt", None), ("x.txt", "../../outside"), ("/etc/passwd.txt", None),
                       ("esc\x1b[31m.txt", None), ("con.txt", None), (".hidden.txt", None), ("notes.csv", None),
                       ("a" * 300 + ".txt", None), ("x.txt", "b" * 300), ("é" * 128 + ".txt", None)]:  # parts over 255 bytes
        files = {"file": (name, b"The escape artist is Harry Houdini.\n")}
        r = server.call("POST", "/collections/guarded/documents", files=files, data={"path": path} if path else {})
        assert r.status_code == 422 and "\n" not in r.json()["detail"], (name, path, r.text)
    r = server.upload("guarded", "broken.pdf", b"not a pdf at all")
    assert r.status_code == 422 and "broken.pdf" in r.json()["detail"]
    r = server.upload("guarded", "big.txt", b"a " * (10 * 2**20) + b"b")  # one byte over the 20 MiB limit
    assert r.status_code == 413
    assert sorted(p.relative_to(data.parent) for p in data.parent.rglob("*")) == before
    assert not any(folder.rglob("*.txt")) and not (data.parent / "escape.txt").exists()
    assert server.upload("guarded", "one.txt", HARBOUR).status_code == 201
    assert server.upload("guarded", "one.txt", FERRY).status_code == 409
    assert server.upload("guarded", "one.txt", FERRY, params={"replace": "true"}).status_code == 201
    assert (folder / "docs" / "one.txt").read_bytes() == FERRY


def test_questions_asked_while_uploads_run_all_get_answers(server):
    server.call("PUT", "/collections/busy")
    server.upload("busy", "harbour.txt", HARBOUR)
    errors: list[str] = []

    def uploads():
        for i in range(4):
            text = f"Report {i}: the lighthouse on island {i} was painted red in {2000 + i}.\n".encode()
            r = server.upload("busy", f"report-{i}.txt", text)
            if r.status_code != 201:
                errors.append(r.text)

    thread = threading.Thread(target=uploads)
    thread.start()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: server.call("POST", "/collections/busy/ask",
                                                      json={"question": "Who is the harbour master of Inis Mor?"}), range(20)))
    thread.join()
    assert not errors and [r.status_code for r in answers] == [200] * 20
    assert all(r.json()["answer"] == "Sean Ryan" for r in answers)
    assert len(server.call("GET", "/collections/busy/documents").json()) == 5


def test_keys_guard_every_route_and_survive_a_restart_with_the_collections(tmp_path):
    data = tmp_path / "data"
    first = Server(data)
    try:
        first.call("PUT", "/collections/kept")
        assert first.upload("kept", "harbour.txt", HARBOUR).status_code == 201
    finally:
        first.stop()
    out = cli("keys", "add", "reader", "--scope", "read", "--data", data)
    assert out.returncode == 0, out.stderr
    read = out.stdout.strip().splitlines()[-1]
    write = cli("keys", "add", "writer", "--scope", "write", "--data", data).stdout.strip().splitlines()[-1]
    keys_file = data / "keys.json"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert read not in keys_file.read_text() and write not in keys_file.read_text()
    listed = cli("keys", "list", "--data", data).stdout
    assert "reader" in listed and "writer" in listed and read not in listed
    server = Server(data)  # the restart: collections, documents and keys are all still there
    try:
        assert server.call("GET", "/health").status_code == 200  # open without a key
        assert server.call("GET", "/static/app.js").status_code == 200
        missing = server.call("GET", "/collections")
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert server.call("GET", "/collections", token="rag_wrong").status_code == 401
        assert server.call("POST", "/ask", json={"question": "Who?"}).status_code == 401
        assert {c["name"] for c in server.call("GET", "/collections", token=read).json()} == {"default", "kept"}
        answer = server.call("POST", "/collections/kept/ask", token=read, json={"question": "Who is the harbour master of Inis Mor?"})
        assert answer.json()["answer"] == "Sean Ryan"
        assert server.call("PUT", "/collections/other", token=read).status_code == 403
        assert server.upload("kept", "ferry.txt", FERRY, token=read).status_code == 403
        assert server.call("DELETE", "/collections/kept/documents/harbour.txt", token=read).status_code == 403
        assert server.upload("kept", "ferry.txt", FERRY, token=write).status_code == 201
        assert server.call("PUT", "/collections/other", token=write).status_code == 201
        assert cli("keys", "revoke", "reader", "--data", data).returncode == 0
        assert server.call("GET", "/collections", token=read).status_code == 401  # revoked: at once
    finally:
        server.stop()
    log = server.log.read_text()
    assert "key=writer" in log and "key=reader" in log and read not in log and write not in log
    assert json.loads(keys_file.read_text())["keys"][0]["last_used"] is not None


def test_the_openapi_schema_documents_the_routes(server):
    paths = server.call("GET", "/openapi.json").json()["paths"]
    for path in ("/ask", "/collections", "/collections/{name}", "/collections/{name}/documents",
                 "/collections/{name}/documents/{source}", "/collections/{name}/ask", "/health"):
        assert path in paths, path
    assert os.environ["RAG_DATA"]  # the session's own data folder, never the user's


def test_a_page_of_another_site_cannot_upload_and_default_stays_the_users_folder(server, data):
    server.call("PUT", "/collections/csrf")
    evil = {"origin": "https://evil.example"}
    r = server.call("POST", "/collections/csrf/documents", files={"file": ("x.txt", HARBOUR)}, headers=evil)
    assert r.status_code == 403 and "another site" in r.json()["detail"]
    r = server.call("POST", "/collections/csrf/documents", files={"file": ("x.txt", HARBOUR)},
                    headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    same = server.call("POST", "/collections/csrf/documents", files={"file": ("x.txt", HARBOUR)},
                       headers={"origin": server.url})  # the page itself
    assert same.status_code == 201
    assert server.call("GET", "/collections", headers=evil).status_code == 200  # reading is not a change
    r = server.upload("default", "planted.txt", b"The password is hunter2.\n")
    assert r.status_code == 409 and "--writable-default" in r.json()["detail"]
    assert server.call("DELETE", "/collections/default/documents/001_fa8838ea44d7c2c5.txt").status_code == 409
    assert (SEEDS / "001_fa8838ea44d7c2c5.txt").is_file() and not (SEEDS / "planted.txt").exists()


def test_deletes_leave_no_empty_folders_and_a_collection_with_one_survives_a_restart(tmp_path):
    data = tmp_path / "data"
    server = Server(data)
    try:
        server.call("PUT", "/collections/nested")
        server.call("POST", "/collections/nested/documents", files={"file": ("a.txt", HARBOUR)}, data={"path": "deep/er"})
        server.upload("nested", "b.txt", FERRY)
        assert server.call("DELETE", "/collections/nested/documents/deep/er/a.txt").status_code == 204
        assert not (data / "collections" / "nested" / "docs" / "deep").exists()
        (data / "collections" / "nested" / "docs" / "left-over").mkdir()  # an empty folder, as a crash may leave
    finally:
        server.stop()
    again = Server(data)
    try:
        names = {c["name"]: c for c in again.call("GET", "/collections").json()}
        assert names["nested"]["documents"] == 1
    finally:
        again.stop()


