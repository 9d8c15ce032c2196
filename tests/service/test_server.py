import concurrent.futures
import signal

import httpx
import pytest
from fastapi.testclient import TestClient

from rag.offline.bench import free_port, start_server, stop_server
from rag.service.server import create_app


@pytest.fixture(scope="module")
def client(settings, pipeline):
    with TestClient(create_app(settings, pipeline=pipeline)) as c:
        yield c


def test_ask_answers_with_citation(client, pipeline):
    r = client.post("/ask", json={"question": "Who did Anthropic hire to lead its infrastructure effort?"})
    assert r.status_code == 200
    body = r.json()
    assert body["answer"] == "Eric Boyd"
    c = body["citations"][0]
    assert pipeline.documents[c["source"]].text[c["start"] : c["end"]] == "Eric Boyd"


def test_ask_abstains(client):
    body = client.post("/ask", json={"question": "What is the capital of France?", "top_k": 3}).json()
    assert body["answer"] is None and body["citations"] == [] and len(body["passages"]) == 3


@pytest.mark.parametrize("payload,fragment", [
    ({"question": ""}, "question"),
    ({"question": "   \n "}, "empty"),
    ({"question": 42}, "question"),
    ({}, "question"),
    ({"question": "x" * 1001}, "1000"),
    ({"question": "Who?", "top_k": 0}, "top_k"),
    ({"question": "Who?", "top_k": 21}, "top_k"),
    ({"question": "Who?", "top_k": "many"}, "top_k"),
    ({"question": "Who?", "surprise": 1}, "surprise"),
])
def test_bad_input_gets_422_with_message(client, payload, fragment):
    r = client.post("/ask", json=payload)
    assert r.status_code == 422
    assert fragment in r.json()["detail"]


def test_malformed_json_and_oversized_body(client):
    r = client.post("/ask", content=b'{"question": "Who', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "malformed JSON" in r.json()["detail"]
    r = client.post("/ask", content=b'{"question": "' + b"x" * 20000 + b'"}', headers={"content-type": "application/json"})
    assert r.status_code == 413 and "too large" in r.json()["detail"]


def test_internal_error_is_a_short_500(settings, pipeline, monkeypatch):
    app = create_app(settings, pipeline=pipeline)
    with TestClient(app, raise_server_exceptions=False) as c:
        monkeypatch.setattr(pipeline, "run", lambda *a, **k: 1 / 0)
        r = c.post("/ask", json={"question": "Who?"})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error; see the server log"}


def test_health_and_openapi(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["documents"] == 5 and h["passages"] > 5
    assert h["reader_runtime"] in ("torch fp32", "onnxruntime fp32")
    assert h["embedding_runtime"] in ("sentence-transformers (torch fp32)", "onnxruntime fp32")
    schema = client.get("/openapi.json").json()
    assert {"AskRequest", "AskResponse"} <= set(schema["components"]["schemas"])
    assert client.get("/docs").status_code == 200


@pytest.mark.slow
def test_real_server_under_concurrent_load(settings):
    port = free_port()
    proc = start_server(port, settings.docs_dir, settings.index_dir)
    try:
        questions = ["Who did Anthropic hire to lead its infrastructure effort?", "When did Karpathy announce his move to Anthropic?"]

        def ask(i):
            return httpx.post(f"http://127.0.0.1:{port}/ask", json={"question": questions[i % 2]}, timeout=120)

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(ask, range(48)))
        assert all(r.status_code == 200 for r in responses)
        assert all(r.json()["answer"] in ("Eric Boyd", "May 2026") for r in responses)
    finally:
        stop_server(proc)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it (exit status -15); a server that hung
    # would have been killed after stop_server's grace period (-9).
    assert proc.returncode in (0, -signal.SIGTERM), proc.returncode
