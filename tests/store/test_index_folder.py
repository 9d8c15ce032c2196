"""What a new user and a security reviewer found (the reliability issue): an index rebuilt from the wrong
folder, terminal escapes, a reader without its QA head, bench without httpx, bad QA records, names with a
newline, concurrent builds; and the weaker ones (a server that never saw a rebuilt index, the Host header,
unsupported files counted, JSON expected)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
from fastapi.testclient import TestClient

from rag.config import PACKAGED_READER_DIR, Settings
from rag.errors import QuestionError
from rag.index import CorpusFolderMismatchError, index_corpus, load_index, open_index, save_index
from rag.pipeline import Pipeline
from rag.server import allowed_hosts_for, create_app

from conftest import REPO, SEEDS, cli

LIGHTHOUSE = "The lighthouse keeper on Inis Mor is named Brigid Flanagan. She has kept the light since 1998.\n"
FERRY = "The ferry to the island leaves from Rossaveal harbour every morning at nine.\n"


@pytest.fixture()
def user_index(tmp_path, settings, embedder):
    """A user's two documents indexed from `mydocs/` into `myindex/`, and a folder `elsewhere/` holding a
    `seeds/` of its own (where the old code rebuilt the user's index from)."""
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "lighthouse.txt").write_text(LIGHTHOUSE)
    (docs / "ferry.txt").write_text(FERRY)
    index_corpus(settings.with_overrides(docs_dir=docs, index_dir=tmp_path / "myindex"), embedder, progress=False)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(SEEDS, elsewhere / "seeds")
    return docs, tmp_path / "myindex", elsewhere


def test_a_question_from_a_folder_with_its_own_seeds_uses_the_folder_the_index_was_built_from(user_index):
    docs, index, elsewhere = user_index
    before = (index / "manifest.json").read_bytes()
    out = cli("ask", "--index", index, "--json", "Who is the lighthouse keeper on Inis Mor?", cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["answer"] == "Brigid Flanagan"
    assert (index / "manifest.json").read_bytes() == before, "the index was not touched"
    out = cli("ask", "--index", index, "--docs", elsewhere / "seeds", "Who is the lighthouse keeper?", cwd=elsewhere)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "was built from" in out.stderr and "rag index --docs" in out.stderr
    assert (index / "manifest.json").read_bytes() == before


def test_the_library_uses_the_recorded_folder_too(user_index, settings, embedder, monkeypatch):
    docs, index, elsewhere = user_index
    monkeypatch.chdir(elsewhere)  # a ./seeds here, and Settings() names no folder
    s = Settings(index_dir=index)
    assert s.docs_dir is None
    loaded = open_index(s, embedder)
    assert sorted(loaded.documents) == ["ferry.txt", "lighthouse.txt"] and loaded.docs_dir == docs.resolve()
    with pytest.raises(CorpusFolderMismatchError):
        open_index(s.with_overrides(docs_dir=elsewhere / "seeds"), embedder)
    box = docs.parent / "box"  # the index and its documents moved together: found beside it as recorded
    box.mkdir()
    docs.rename(box / docs.name)
    index.rename(box / index.name)
    assert open_index(Settings(index_dir=box / index.name), embedder).docs_dir == (box / docs.name).resolve()


def test_questions_never_remove_documents_from_an_index(user_index, settings, embedder, caplog):
    docs, index, _ = user_index
    (docs / "ferry.txt").unlink()
    (docs / "new.txt").write_text("The harbour master is called Sean Ryan.\n")
    loaded = open_index(Settings(index_dir=index), embedder)
    assert "ferry.txt" in loaded.documents and "new.txt" not in loaded.documents
    assert "ferry.txt" in caplog.text and "rag index" in caplog.text
    shutil.rmtree(docs)  # the folder is gone (unmounted, moved): the index is used as it is
    assert sorted(open_index(Settings(index_dir=index), embedder).documents) == ["ferry.txt", "lighthouse.txt"]
    with pytest.raises(Exception, match="not there any more; say which folder"):
        index_corpus(Settings(index_dir=index), embedder, progress=False)  # and rag index never falls back to ./seeds


def test_an_explicit_index_of_another_folder_switches_the_index(user_index, settings, embedder):
    _, index, elsewhere = user_index
    built = index_corpus(Settings(docs_dir=elsewhere / "seeds", index_dir=index), embedder, progress=False)
    assert "lighthouse.txt" not in built.documents and built.manifest["docs_dir"] == str((elsewhere / "seeds").resolve())


# --- Terminal escapes ---------------------------------------------------------------------------------------

ESC_TEXT = "Crew list\x1b[2J\x1b]0;pwned\x07 The captain of the Nordlys is Greta Holm. She sailed in 1987.\n"
#: The escape right before the answer: the old reader answered "pwned\x07Greta Holm" from text like this.
ESC_BEFORE_ANSWER = "Ship log.\nThe captain of the Nordlys is \x1b[2J\x1b]0;pwned\x07Greta Holm. She sailed in 1987.\n"


def test_nothing_printed_can_steer_the_terminal(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "log.txt").write_text(ESC_TEXT)
    (docs / "esc\x1b[31mRED\x1b[0m.txt").write_text("Red text.\n")
    (docs / "invoice\u202egpj.txt").write_text("The invoice total was 4,200 kroner.\n")
    runs = [cli("index", "--docs", docs, "--index", tmp_path / "idx", cwd=tmp_path)]
    assert runs[0].returncode == 0, runs[0].stderr
    ask = cli("ask", "--index", tmp_path / "idx", "Who is the captain of the Nordlys?", cwd=tmp_path)
    runs += [ask, cli("search", "--index", tmp_path / "idx", "invoice total", cwd=tmp_path),
             cli("show", "--index", tmp_path / "idx", "log.txt", "40", "60", cwd=tmp_path),
             cli("ask", "--index", tmp_path / "idx", "--json", "Who is the captain of the Nordlys?", cwd=tmp_path)]
    for run in runs:
        for stream in (run.stdout, run.stderr):
            raw = stream.encode("utf-8")
            assert b"\x1b" not in raw and b"\x07" not in raw and "\u202e".encode() not in raw, stream
    assert "Answer: Greta Holm" in ask.stdout, ask.stdout
    assert "\\u202e" in runs[2].stdout  # the override is shown, escaped, not obeyed
    assert "esc\\u001b[31mRED" in runs[0].stdout and "control characters" in runs[0].stdout
    assert json.loads(runs[-1].stdout)["answer"] == "Greta Holm"  # JSON keeps its meaning


def test_an_answer_never_holds_a_control_character(tmp_path, settings, embedder, pipeline):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "log.txt").write_text(ESC_BEFORE_ANSWER)
    s = settings.with_overrides(docs_dir=docs, index_dir=tmp_path / "idx")
    qa = Pipeline.from_settings(s, index=index_corpus(s, embedder, progress=False), embedder=embedder, reader=pipeline.reader)
    for question in ("Who is the captain of the Nordlys?", "What was set as the window title?"):
        answer = qa.run(question)
        assert answer.answer is None or not any(ord(c) < 32 for c in answer.answer), answer.answer
        spans = qa.reader.run(question, [p.chunk.text for p in answer.passages])
        assert all(not any(ord(c) < 32 and c not in "\t\n\r" for c in s.text) for r in spans for s in r.spans)


# --- The reader's head and its calibration ------------------------------------------------------------------

def test_a_reader_without_a_qa_head_is_refused_in_one_line(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from rag.reader import Reader, ReaderError

    folder = tmp_path / "encoder"
    AutoModel.from_pretrained(PACKAGED_READER_DIR).save_pretrained(folder)  # the encoder alone: no qa_outputs
    AutoTokenizer.from_pretrained(PACKAGED_READER_DIR).save_pretrained(folder)
    with pytest.raises(ReaderError, match="no trained question-answering head"):
        Reader(str(folder), backend="torch").warm_up()
    out = cli("ask", "--reader", folder, "--reader-backend", "torch", "Who did Anthropic hire?")
    assert out.returncode == 1 and "no trained question-answering head" in out.stderr and "Traceback" not in out.stderr


def test_an_uncalibrated_reader_says_so_everywhere(tmp_path, settings, seed_index, embedder):
    from rag.reader import META_FILE

    folder = tmp_path / "reader"
    folder.mkdir()
    for f in PACKAGED_READER_DIR.iterdir():
        if f.is_file() and f.name != META_FILE:
            os.symlink(f, folder / f.name)
    (folder / META_FILE).write_text("{}")
    qa = Pipeline.from_settings(settings.with_overrides(reader_model=str(folder), reader_backend="torch"),
                                index=seed_index, embedder=embedder)
    answer = qa.run("Who did Anthropic hire to lead its infrastructure effort?")
    assert answer.calibrated is False
    with TestClient(create_app(settings, pipeline=qa)) as client:
        body = client.post("/ask", json={"question": "What is the capital of Mars?"}).json()
        assert body["calibrated"] is False and any("not calibrated" in w for w in body["warnings"])
        assert client.get("/health").json()["calibrated"] is False
    from rag.cli import format_answer

    assert "uncalibrated" in format_answer(answer) and "rag calibrate-reader" in format_answer(answer)


# --- Bench after the plain install, bad QA records, empty questions ------------------------------------------

def test_bench_runs_without_httpx():
    """After the README's plain install (no httpx): `rag bench` parses, and its HTTP client (the standard
    library's) talks to a server."""
    code = textwrap.dedent("""
        import http.server, json, sys, threading
        sys.modules["httpx"] = None  # as after the README's plain install: importing it fails
        from rag.offline import bench
        from rag.cli import main

        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"status": "ok"}).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(bench.http_json("GET", f"http://127.0.0.1:{server.server_port}/health"))
        try:
            main(["bench", "curve", "x.json"])
        except SystemExit as exit:
            print("exit", exit.code)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "(200, {'status': 'ok'})" in out.stdout and "exit 2" in out.stdout, out.stderr
    assert "--readers" in out.stderr and "Traceback" not in out.stderr and "httpx" not in out.stderr


def test_bad_qa_records_are_one_line_errors(tmp_path, caplog):
    from rag.offline.evaluation import EvalError, load_qa, warn_unknown_sources

    for record, message in [({"id": "q1", "question": 5, "answers": [], "sources": []}, "question: Input should be a valid string"),
                            ({"id": "q1", "question": " \x00 ", "answers": [], "sources": []}, "question: the question is empty"),
                            ({"id": "q1", "question": "Who?", "answers": "Ann", "sources": []}, "answers"),
                            ({"id": "q1", "question": "Who?"}, "answers")]:
        path = tmp_path / "qa.jsonl"
        path.write_text(json.dumps({"id": "q0", "question": "Fine?", "answers": [], "sources": []}) + "\n" + json.dumps(record) + "\n")
        with pytest.raises(EvalError, match=f"line 2: not a valid QA record \\({message}"):
            load_qa(path)
    out = cli("eval", "--qa", path)
    assert out.returncode == 1 and "line 2" in out.stderr and "Traceback" not in out.stderr
    path.write_text(json.dumps({"id": 1, "question": "Who?", "answers": ["Ann"], "sources": ["gone.txt"]}) + "\n")
    items = load_qa(path)
    warn_unknown_sources(items, {"here.txt": None})
    assert items[0].id == "1" and "gone.txt" in caplog.text


@pytest.mark.parametrize("question", ["", "   ", "\x00\x1b", 5])
def test_the_library_refuses_an_empty_question(pipeline, question):
    with pytest.raises(QuestionError):
        pipeline.run(question)


# --- Names, unsupported files, concurrent builds --------------------------------------------------------------

def test_a_name_with_a_newline_is_skipped_and_other_formats_are_counted(tmp_path, settings, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text(LIGHTHOUSE)
    (docs / "bad\nname.txt").write_text(FERRY)
    for name in ("table.csv", "letter.rtf", "old.doc", "README"):
        (docs / name).write_text("x")
    index = index_corpus(settings.with_overrides(docs_dir=docs, index_dir=tmp_path / "idx"), embedder, progress=False)
    assert list(index.documents) == ["good.txt"]
    assert "control characters" in index.manifest["skipped"]["bad\\u000aname.txt"]
    assert index.manifest["unsupported"] == {"(no extension)": 1, ".csv": 1, ".doc": 1, ".rtf": 1}
    out = cli("index", "--docs", docs, "--index", tmp_path / "idx2")
    assert "indexed 1 document (1 text)" in out.stdout and "into 1 passage in" in out.stdout, out.stdout
    assert "not read (4 files of formats rag does not read): 1 (no extension), 1 .csv, 1 .doc, 1 .rtf" in out.stdout


SAVER = textwrap.dedent("""
    import sys
    from rag.index import load_index, save_index
    index = load_index(sys.argv[1])
    for _ in range(int(sys.argv[3])):
        save_index(index, sys.argv[2])
    print("saved")
""")
READER = textwrap.dedent("""
    import sys, time
    from rag.index import load_index
    deadline, n = time.time() + float(sys.argv[2]), 0
    while time.time() < deadline:
        assert len(load_index(sys.argv[1]).chunks) > 0
        n += 1
    print("read", n)
""")


def test_two_processes_saving_one_index_take_turns_and_readers_never_miss_it(tmp_path, user_index):
    _, source, _ = user_index
    target = tmp_path / "shared-idx"
    save_index(load_index(source), target)
    run = [sys.executable, "-c"]
    procs = [subprocess.Popen(run + [SAVER, str(source), str(target), "150"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    procs.append(subprocess.Popen(run + [READER, str(target), "6"], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    assert [o[0].split()[0] for o in outs] == ["saved", "saved", "read"]
    assert sorted(p.name for p in tmp_path.glob(".shared-idx*")) == [".shared-idx.lock"]


def test_a_second_build_waits_for_the_first_and_says_so(tmp_path, user_index, settings, embedder, caplog):
    docs, index, _ = user_index
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from rag.index import index_lock
        with index_lock({str(index)!r}):
            print("holding", flush=True)
            time.sleep(3)
    """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    started = time.monotonic()
    index_corpus(Settings(docs_dir=docs, index_dir=index), embedder, progress=False)
    assert time.monotonic() - started > 1.0 and "waiting for it to finish" in caplog.text
    holder.wait(timeout=30)


# --- The server: rebuilt index taken up, Host header, JSON expected --------------------------------------------

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


def _read_until(fd: int, marker: bytes, seconds: float) -> bytes:
    import select

    seen, deadline = b"", time.monotonic() + seconds
    while marker not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _wait_exit(pid: int, fd: int, seconds: float):
    """The child's exit status, reading its output meanwhile (a full pty would block it); None if it is
    still running after `seconds` (never a wait without end)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        _read_until(fd, b"\x00", 0.2)
    return None


def test_ctrl_c_in_the_interactive_prompt_cancels_the_line_and_ctrl_d_leaves():
    """In a real terminal (a pty): Ctrl-C at the prompt drops the line and asks again, a question is still
    answered after it, and Ctrl-D ends the session with status 0."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: `rag ask` on the committed index, in the terminal
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "rag.cli", "ask", "--no-rebuild"])
    try:
        # Each key goes once readline holds the terminal: a Ctrl-D typed while the terminal is still in cooked
        # mode (the prompt printed, input() not yet called) reaches readline as a NUL, not as end of input.
        assert b"question> " in _read_until(fd, b"question> ", 120)
        time.sleep(1.0)
        os.write(fd, b"half a question\x03")
        after = _read_until(fd, b"question> ", 30)
        assert b"rag: cancelled" in after and b"question> " in after and b"interrupted" not in after
        time.sleep(1.0)
        os.write(fd, b"Who did Anthropic hire to lead its infrastructure effort?\r")
        answered = _read_until(fd, b"question> ", 120)
        assert b"Eric Boyd" in answered, answered
        time.sleep(1.0)
        os.write(fd, b"\x04")
        status = _wait_exit(pid, fd, 30)
        assert status is not None, "Ctrl-D did not end the session"
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
