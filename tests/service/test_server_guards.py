"""Bad input never loses a file, never crashes and never stalls the service (issue: reliability)."""
import base64
import json
import os
import random
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rag.chunking import chunk_document
from rag.index import CorruptIndexError, UnsafeIndexFolderError, index_corpus, load_index, open_index, read_manifest
from rag.ingest import load_corpus
from rag.pipeline import Pipeline
from rag.server import create_app
from rag.types import Document

from conftest import REPO, cli

LONG_QUESTION = " ".join(["a"] * 500)  # 500 tokens, under the 1,000-character limit
CHINESE_QUESTION = "中" * 308


@pytest.fixture()
def tiny_docs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "lighthouse.txt").write_text("The Fastnet Rock lighthouse was completed in 1904. It stands off Ireland.\n")
    return docs


# --- 1. Never lose a user's files -------------------------------------------------------------------------

def test_index_refuses_a_folder_that_is_not_an_index_and_keeps_its_files(tiny_docs, tmp_path, settings, embedder):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.docx").write_text("four years of work")
    s = settings.with_overrides(docs_dir=tiny_docs, index_dir=victim)
    with pytest.raises(UnsafeIndexFolderError, match="not a rag index folder.*thesis.docx"):
        index_corpus(s, embedder)
    with pytest.raises(UnsafeIndexFolderError):  # the ask/search/serve path: no manifest means "rebuild"
        open_index(s, embedder, rebuild=True)
    assert (victim / "thesis.docx").read_text() == "four years of work"
    assert sorted(p.name for p in victim.iterdir()) == ["thesis.docx"]


def test_cli_index_into_a_user_folder_is_a_one_line_error(tiny_docs, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.docx").write_text("x")
    out = cli("index", "--docs", tiny_docs, "--index", victim)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "refusing to replace it" in out.stderr
    assert (victim / "thesis.docx").read_text() == "x"
    out = cli("index", "--docs", tiny_docs, "--index", ".", cwd=tmp_path)  # the working folder holds the corpus
    assert out.returncode == 1 and "Traceback" not in out.stderr and "overlaps the corpus" in out.stderr
    assert (tiny_docs / "lighthouse.txt").is_file() and (victim / "thesis.docx").is_file()


@pytest.mark.parametrize("where", ["same", "inside", "containing"])
def test_index_folder_overlapping_the_corpus_is_refused(tiny_docs, settings, embedder, where):
    index_dir = {"same": tiny_docs, "inside": tiny_docs / "idx", "containing": tiny_docs.parent}[where]
    with pytest.raises(UnsafeIndexFolderError, match="overlaps the corpus"):
        index_corpus(settings.with_overrides(docs_dir=tiny_docs, index_dir=index_dir), embedder)
    assert (tiny_docs / "lighthouse.txt").read_text().startswith("The Fastnet Rock")


def test_rebuild_replaces_only_its_own_index_and_keeps_the_folder_mode(tiny_docs, tmp_path, settings, embedder):
    index_dir = tmp_path / "idx"
    index_dir.mkdir()  # empty: allowed
    index_dir.chmod(0o750)
    leftover = tmp_path / ".idx.tmp-killed"  # what a killed build leaves behind
    leftover.mkdir()
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    s = settings.with_overrides(docs_dir=tiny_docs, index_dir=index_dir)
    index_corpus(s, embedder)
    index_corpus(s, embedder)  # an index of ours: replaced
    assert load_index(index_dir).manifest["n_documents"] == 1
    assert index_dir.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.lock", "docs", "idx"]  # the lock file stays (empty)


def test_manifest_with_wrong_types_is_reported_not_a_traceback(tiny_docs, tmp_path, settings, embedder):
    index_dir = tmp_path / "idx"
    index_corpus(settings.with_overrides(docs_dir=tiny_docs, index_dir=index_dir), embedder)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    (index_dir / "manifest.json").write_text(json.dumps({**manifest, "params": None}))
    with pytest.raises(CorruptIndexError, match="manifest.json: params"):
        read_manifest(index_dir)


# --- 2. Long questions: refused with the limit in tokens, never a crash --------------------------------------

@pytest.mark.parametrize("question", [LONG_QUESTION, CHINESE_QUESTION])
def test_http_long_question_is_a_422_naming_the_token_limit(settings, pipeline, question):
    with TestClient(create_app(settings, pipeline=pipeline), raise_server_exceptions=False) as client:
        r = client.post("/ask", json={"question": question})
        assert r.status_code == 422, r.text
        assert "tokens" in r.json()["detail"] and str(settings.max_question_tokens) in r.json()["detail"]
        ok = client.post("/ask", json={"question": "Who did Anthropic hire to lead its infrastructure effort?"})
        assert ok.status_code == 200 and ok.json()["answer"] == "Eric Boyd"


def test_cli_long_question_one_shot_and_interactive():
    out = cli("ask", "--no-rebuild", LONG_QUESTION)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "tokens" in out.stderr and out.stderr.strip().count("\n") == 0
    good = "Who did Anthropic hire to lead its infrastructure effort?"
    out = cli("ask", "--no-rebuild", "--json", stdin=f"{good}\n{LONG_QUESTION}\n{CHINESE_QUESTION}\n{good}\n")
    assert out.returncode == 0, out.stderr
    answers = [json.loads(line)["answer"] for line in out.stdout.splitlines()]
    assert answers == ["Eric Boyd", "Eric Boyd"], "the session goes on after a bad question"
    assert out.stderr.count("tokens long") == 2 and "Traceback" not in out.stderr


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


# --- 3. One document cannot stall everyone ----------------------------------------------------------------

def _base64_text(n_bytes: int) -> str:
    return base64.b64encode(random.Random(0).randbytes(n_bytes * 3 // 4)).decode()


def _spaceless_chinese(n_chars: int) -> str:
    rng = random.Random(0)
    return "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(n_chars))


def test_spaceless_text_is_chunked_by_characters_with_exact_offsets():
    doc = Document("blob.txt", "Intro sentence. " + _spaceless_chinese(35_000) + " Outro.")
    chunks = chunk_document(doc, 700, 1)
    assert len(chunks) > 150 and max(len(c.text) for c in chunks) <= 700 // 4 + 15  # a wide character counts 4
    assert all(doc.text[c.start : c.end] == c.text for c in chunks)
    assert "".join(c.text for c in chunks[1:-1]) == _spaceless_chinese(35_000)


def test_encoded_data_is_left_out_of_the_passages():
    blob = _base64_text(100_000)
    doc = Document("note.md", f"The logo is below.\n![logo](data:image/png;base64,{blob})\nIt was drawn in 1999.")
    chunks = chunk_document(doc, 700, 1)
    assert all(doc.text[c.start : c.end] == c.text for c in chunks)
    assert max(len(c.text) for c in chunks) < 100 and chunks[-1].text.endswith("It was drawn in 1999.")
    assert not chunk_document(Document("blob.txt", blob), 700, 1)


def test_a_five_megabyte_line_of_encoded_data_indexes_in_seconds(tmp_path, settings, embedder, caplog):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "blob.txt").write_text(_base64_text(5 * 1024 * 1024))
    (docs / "note.txt").write_text("The Fastnet Rock lighthouse was completed in 1904.")
    started = time.perf_counter()
    index = index_corpus(settings.with_overrides(docs_dir=docs, index_dir=tmp_path / "idx"), embedder, progress=False)
    assert time.perf_counter() - started < 30
    assert [c.source for c in index.chunks] == ["note.txt"]
    assert "blob.txt: 5242880 characters of encoded data" in caplog.text


def test_reader_reads_a_bounded_number_of_windows(pipeline):
    reader = pipeline.reader
    huge = "word " * 50_000
    encoding = reader.encode(["What?", "What?"], [huge, "A short passage."])
    kept = reader.kept_windows(encoding)
    assert len(kept) <= reader.max_windows_per_context + 1
    pairs = [int(encoding["overflow_to_sample_mapping"][w]) for w in kept]
    assert pairs.count(1) == 1, "the short passage is always read"
    readings = reader.run("What?", [huge, "A short passage."])
    assert len(readings) == 2 and all(r.null_score < float("inf") for r in readings)


def test_a_normal_question_is_answered_while_another_reads_a_spaceless_document(tmp_path, settings, embedder):
    from rag.index import memory_index

    docs = [Document("001.txt", (REPO / "seeds" / "001_fa8838ea44d7c2c5.txt").read_text(encoding="utf-8")),
            Document("blob.txt", _spaceless_chinese(35_000))]  # about 100 KB of UTF-8 with no space or full stop
    index = memory_index(docs, embedder, settings)
    p = Pipeline.from_settings(settings, index=index)
    question = "Who did Anthropic hire to lead its infrastructure effort?"
    p.run(question)  # warm
    started = time.perf_counter()
    p.run(question)
    alone = time.perf_counter() - started  # a normal question on this CPU: the unit of the bounds below
    slow_seconds = []

    def nonsense():
        started = time.perf_counter()
        p.run("zqxj vbnm kkkkk?", top_k=20)  # matches no word: dense retrieval brings the spaceless passages
        slow_seconds.append(time.perf_counter() - started)

    thread = threading.Thread(target=nonsense)
    thread.start()
    time.sleep(0.05)
    started = time.perf_counter()
    answer = p.run(question)
    waited = time.perf_counter() - started
    thread.join()
    assert answer.answer == "Eric Boyd"
    # Bounds in units of this CPU's own normal question (CPUs differ several-fold): the spaceless read is
    # bounded (a few questions' worth of windows, not 35,000 characters' worth), and the normal question
    # waits at most for it, then for itself.
    assert slow_seconds[0] < 15 * alone + 0.5, f"the spaceless read took {slow_seconds[0]:.1f} s, a question {alone:.2f} s"
    assert waited < slow_seconds[0] + 3 * alone + 0.5, f"a normal question waited {waited:.1f} s (the other took {slow_seconds})"


# --- 4. Bad names, unreadable files and links -------------------------------------------------------------

def test_bad_file_name_and_unreadable_file_are_skipped_with_a_warning(tiny_docs, monkeypatch, caplog):
    with open(os.fsencode(tiny_docs) + b"/caf\xe9.txt", "wb") as f:
        f.write(b"x.")
    locked = tiny_docs / "locked.txt"
    locked.write_text("secret.")
    real_read = Path.read_bytes

    def read_bytes(self):  # root reads any file whatever its mode, so the refusal is simulated
        if self.name == "locked.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    corpus = load_corpus(tiny_docs)
    assert [d.source for d in corpus.documents] == ["lighthouse.txt"]
    assert corpus.skipped["locked.txt"].startswith("cannot be read (Permission denied")
    assert any("not valid UTF-8" in reason for name, reason in corpus.skipped.items() if name.startswith("caf"))
    json.dumps(corpus.skipped)  # the manifest can hold the names
    assert "skipping locked.txt" in caplog.text and "skipping caf" in caplog.text


def test_cli_index_with_a_bad_file_name_does_not_abort(tiny_docs, tmp_path):
    with open(os.fsencode(tiny_docs) + b"/caf\xe9.txt", "wb") as f:
        f.write(b"x.")
    out = cli("index", "--docs", tiny_docs, "--index", tmp_path / "idx")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "not valid UTF-8" in out.stderr and "skipped 1:" in out.stdout


def test_links_leaving_the_corpus_are_skipped_unless_allowed(tiny_docs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("The password is swordfish.")
    (tiny_docs / "link.txt").symlink_to(outside / "secret.txt")
    (tiny_docs / "inner.txt").symlink_to(tiny_docs / "lighthouse.txt")
    corpus = load_corpus(tiny_docs)
    assert sorted(d.source for d in corpus.documents) == ["inner.txt", "lighthouse.txt"]
    assert "outside the corpus" in corpus.skipped["link.txt"]
    assert "link.txt" in [d.source for d in load_corpus(tiny_docs, follow_links=True).documents]


def test_oversized_file_is_skipped(tiny_docs):
    (tiny_docs / "big.txt").write_text("A sentence. " * 1000)
    corpus = load_corpus(tiny_docs, max_file_bytes=5000)
    assert "over the" in corpus.skipped["big.txt"] and [d.source for d in corpus.documents] == ["lighthouse.txt"]


# --- The server under slow, idle or odd clients -------------------------------------------------------------

def test_a_body_that_never_arrives_gets_a_408_not_a_held_worker():
    import asyncio

    from rag.middleware import BodyLimits

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

    caplog.set_level(logging.INFO, logger="rag.server")
    with TestClient(create_app(settings, pipeline=pipeline)) as client:
        assert client.post("/ask", content=b"x" * 20000, headers={"content-type": "application/json"}).status_code == 413
        assert client.get("/health").status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "rag.server"]
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


def test_serve_on_a_busy_or_impossible_port_is_a_one_line_error_before_loading():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        started = time.perf_counter()
        out = cli("serve", "--no-rebuild", "--port", busy.getsockname()[1], timeout=60)
        assert out.returncode == 2 and "cannot listen" in out.stderr and "Traceback" not in out.stderr
        assert time.perf_counter() - started < 30
    out = cli("serve", "--port", "99999", timeout=60)
    assert out.returncode == 2 and "between 1 and 65535" in out.stderr and "Traceback" not in out.stderr


def test_a_batch_of_many_questions_reads_every_pair(pipeline):
    """The per-question window budget applies to one question's passages, not to a batch of pairs
    (training's dev evaluation reads 64 questions in one call)."""
    questions = [f"Who designed lighthouse number {i}?" for i in range(40)]
    contexts = [f"Lighthouse number {i} was designed by William Douglass." for i in range(40)]
    readings = pipeline.reader.read_pairs(questions, contexts)
    assert len(readings) == 40 and all(r.spans and r.null_score < float("inf") for r in readings)


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
    from rag.server import uvicorn_limits

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


def test_a_passage_never_spans_encoded_data_even_when_passages_are_long():
    text = "Here is data: " + "A" * 1200 + " and more text. The end."
    chunks = chunk_document(Document("d.txt", text), 3000, 1)
    assert all("A" * 100 not in c.text for c in chunks)
    assert [c.text for c in chunks] == ["Here is data:", "and more text. The end."]
