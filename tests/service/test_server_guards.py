"""The HTTP server under bad input and odd clients: long or empty questions and a bad top_k are a 422, bodies
too large or too slow a 413 or 408, the Host header checked, every response logged, the API docs offline,
and a stale or rebuilt index seen by a running server."""
import threading
import time

import pytest
from fastapi.testclient import TestClient

from rag.config import Settings
from rag.pipeline.qa import Pipeline
from rag.service.server import allowed_hosts_for, create_app
from rag.store.files.index import index_corpus

from helpers.questions import CHINESE_QUESTION, LONG_QUESTION


@pytest.mark.parametrize("question", [LONG_QUESTION, CHINESE_QUESTION])
def test_http_long_question_is_a_422_naming_the_token_limit(settings, pipeline, question):
    with TestClient(create_app(settings, pipeline=pipeline), raise_server_exceptions=False) as client:
        r = client.post("/ask", json={"question": question})
        assert r.status_code == 422, r.text
        assert "tokens" in r.json()["detail"] and str(settings.max_question_tokens) in r.json()["detail"]
        ok = client.post("/ask", json={"question": "Who did Anthropic hire to lead its infrastructure effort?"})
        assert ok.status_code == 200 and ok.json()["answer"] == "Eric Boyd"


def test_control_characters_are_stripped_and_nothing_left_is_empty(settings, pipeline):
    with TestClient(create_app(settings, pipeline=pipeline)) as client:
        r = client.post("/ask", json={"question": "\x00\x07 \u200b"})
        assert r.status_code == 422 and "empty" in r.json()["detail"]
        r = client.post("/ask", json={"question": "Who did Anthropic hire\x00 to lead its infrastructure effort?"})
        assert r.status_code == 200 and r.json()["question"] == "Who did Anthropic hire to lead its infrastructure effort?"


@pytest.mark.parametrize("top_k", ["5", True, 5.0])
def test_top_k_must_be_an_integer(settings, pipeline, top_k):
    with TestClient(create_app(settings, pipeline=pipeline)) as client:
        r = client.post("/ask", json={"question": "Who?", "top_k": top_k})
        assert r.status_code == 422 and "top_k" in r.json()["detail"]


# --- The server under slow, idle or odd clients -------------------------------------------------------------

def test_a_body_that_never_arrives_gets_a_408_not_a_held_worker():
    import asyncio

    from rag.service.middleware import BodyLimits

    sent = []

    async def app(scope, receive, send):
        await receive()  # FastAPI reading the body
        raise AssertionError("never reached")

    async def receive():
        await asyncio.sleep(60)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/ask", "headers": [(b"content-length", b"1000")]}
    started = time.perf_counter()
    asyncio.run(BodyLimits(app, deadline=0.2)(scope, receive, send))
    assert time.perf_counter() - started < 2
    assert sent[0]["status"] == 408 and b"not received" in sent[1]["body"]


def test_every_response_is_logged_with_client_and_status(settings, pipeline, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="rag.service.server")
    with TestClient(create_app(settings, pipeline=pipeline)) as client:
        assert client.post("/ask", content=b"x" * 20000, headers={"content-type": "application/json"}).status_code == 413
        assert client.get("/health").status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "rag.service.server"]
    assert any("POST /ask 413" in line and line.startswith("testclient:") for line in lines)
    assert any("GET /health 200" in line for line in lines)


def test_api_docs_work_offline(settings, pipeline):
    with TestClient(create_app(settings, pipeline=pipeline)) as client:
        for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            html = client.get(page).text
            assert "cdn." not in html and asset in html
            assert client.get(f"/static-offline-docs/{asset}").status_code == 200


def test_health_reports_a_stale_corpus_and_answers_warn_about_changed_files(tiny_docs, tmp_path, settings, embedder):
    s = settings.with_overrides(docs_dir=tiny_docs, index_dir=tmp_path / "idx", corpus_check_seconds=0.0)
    index_corpus(s, embedder)
    p = Pipeline.from_settings(s, rebuild=False)
    with TestClient(create_app(s, pipeline=p)) as client:
        assert client.get("/health").json()["status"] == "ok"
        (tiny_docs / "lighthouse.txt").unlink()
        health = client.get("/health").json()
        assert health["status"] == "stale" and health["corpus_changes"] == ["lighthouse.txt removed"]
        body = client.post("/ask", json={"question": "When was the Fastnet Rock lighthouse completed?"}).json()
        assert body["answer"] == "1904"
        assert body["warnings"] and "lighthouse.txt was removed" in body["warnings"][0]


def test_a_streamed_oversized_body_is_a_413(settings, pipeline):
    def chunks():
        yield b'{"question": "'
        for _ in range(40):
            yield b"x" * 1000
        yield b'"}'

    with TestClient(create_app(settings, pipeline=pipeline)) as client:
        r = client.post("/ask", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "too large" in r.json()["detail"]


def test_a_slow_body_gets_a_408_from_the_real_server(settings, pipeline):
    import socket

    import uvicorn

    from rag.offline.bench import free_port
    from rag.service.server import uvicorn_limits

    port = free_port()
    app = create_app(settings.with_overrides(body_deadline_seconds=1.0), pipeline=pipeline)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_limits()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                         b'{"question": "Wh')
            started = time.perf_counter()
            reply = conn.recv(4096)
            assert time.perf_counter() - started < 5
            # The head and the body may come in separate segments: read until the declared body is all here.
            head, _, body = reply.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            while len(body) < length:
                more = conn.recv(4096)
                if not more:
                    break
                body += more
            reply = head + b"\r\n\r\n" + body
        assert reply.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in reply
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_running_server_takes_up_an_index_rebuilt_by_another_process(user_index, settings, embedder, pipeline):
    docs, index, _ = user_index
    s = Settings(index_dir=index, corpus_check_seconds=0)
    qa = Pipeline.from_settings(s, embedder=embedder, reader=pipeline.reader)
    with TestClient(create_app(s, pipeline=qa)) as client:
        (docs / "harbour.txt").write_text("The harbour master of Inis Mor is called Sean Ryan.\n")
        assert client.get("/health").json()["status"] == "stale"
        index_corpus(Settings(index_dir=index), embedder, progress=False)  # as `rag index` in another process would
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["documents"] == 3
        body = client.post("/ask", json={"question": "Who is the harbour master of Inis Mor?"}).json()
        assert body["answer"] == "Sean Ryan" and body["warnings"] == []
        assert client.get("/api/documents/harbour.txt").status_code == 200


def test_a_loopback_server_answers_only_loopback_host_names(settings, pipeline):
    assert allowed_hosts_for("127.0.0.1") == ["127.0.0.1", "[::1]", "localhost"]
    assert "127.0.0.2" in allowed_hosts_for("127.0.0.2") and allowed_hosts_for("0.0.0.0") is None
    assert allowed_hosts_for("0.0.0.0", ["qa.example.org"]) == ["qa.example.org"]
    with TestClient(create_app(settings, pipeline=pipeline, allowed_hosts=allowed_hosts_for("127.0.0.1")),
                    base_url="http://localhost:8000") as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health", headers={"host": "127.0.0.1:8000"}).status_code == 200
        assert client.get("/health", headers={"host": "[::1]:8000"}).status_code == 200
        for host in ("evil.example.com", "evil.example.com:8000", "localhost.evil.com"):
            assert client.get("/api/documents/001_fa8838ea44d7c2c5.txt", headers={"host": host}).status_code == 400


def test_a_body_without_content_type_is_told_json_is_expected(settings, pipeline):
    with TestClient(create_app(settings, pipeline=pipeline)) as client:
        r = client.post("/ask", content=b'{"question": "Who?"}')
        assert r.status_code == 422 and "JSON object" in r.json()["detail"] and "Content-Type" in r.json()["detail"]
