"""The Python API (`from rag import Pipeline, …`): the README's snippet run as printed, nothing written in
the working directory, str and Path folders, settings by name, limits from the Settings in use, one
tokenization of the question per request, the store closed by the server, the PostgreSQL extra."""
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import rag
from rag import Document, Pipeline, QuestionError, RagError, Settings, SettingsError
from rag.service.server import create_app
from rag.store.files.index import cached_index_dir

from helpers import REPO, SEEDS


def readme_python() -> str:
    """The first Python block of the README's "Python" section, exactly as printed."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Python\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_snippet_runs_as_printed(tmp_path):
    shutil.copytree(SEEDS, tmp_path / "seeds")
    out = subprocess.run([sys.executable, "-c", readme_python()], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Eric Boyd 0.")
    assert any(line.startswith("001_fa8838ea44d7c2c5.txt 1488 1497 None None ") for line in lines)
    assert "Eric Boyd" in lines and "May 2026" in lines
    assert lines[-1] == "corpus folder not found: no/such/folder"
    # index= was asked for; its write lock (an empty file) stays beside it, the only other entry
    assert sorted(p.name for p in tmp_path.iterdir()) == [".seeds-index.lock", "seeds", "seeds-index"]
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_script_in_an_empty_folder_leaves_it_empty(tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    code = textwrap.dedent(f"""
        from pathlib import Path
        from rag import Pipeline, Document
        qa = Pipeline.from_folder({str(SEEDS)!r})
        print(qa.ask("Who did Anthropic hire to lead its infrastructure effort?").answer)
        mem = Pipeline.from_documents(["The harbour master of Inis Mor is Sean Ryan. He took the post in 2019."])
        print([p.chunk.source for p in mem.search("Who is the harbour master?")])
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["Eric Boyd", "['doc-1.txt']"]
    assert list(work.iterdir()) == []


@pytest.mark.slow
def test_str_and_path_folders_are_one_index(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_CACHE", str(tmp_path / "cache"))
    assert cached_index_dir(str(SEEDS)) == cached_index_dir(SEEDS) == cached_index_dir(SEEDS / ".." / "seeds")
    assert cached_index_dir(SEEDS).parent == tmp_path / "cache" / "indexes"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The lighthouse keeper on Inis Mor is named Brigid Flanagan.\n")
    with Pipeline.from_folder(str(docs), index=str(tmp_path / "idx")) as a:
        assert a.retriever.store.counts() == (1, 1)
    (docs / "b.txt").write_text("The ferry leaves from Rossaveal harbour every morning at nine.\n")
    with Pipeline.from_folder(docs, index=tmp_path / "idx", top_k=1) as b:  # a Path, and the added file indexed
        assert b.retriever.store.counts() == (2, 2) and len(b.search("When does the ferry leave?")) == 1
    (docs / "a.txt").unlink()
    with Pipeline.from_folder(docs, index=tmp_path / "idx") as c:  # from_folder is an explicit index: removals too
        assert sorted(c.documents) == ["b.txt"]


def test_bad_arguments_are_rag_errors_with_one_line_messages(tmp_path):
    with pytest.raises(SettingsError, match="unknown setting topk; the settings are: .*top_k"):
        Pipeline.from_folder(SEEDS, topk=3)
    with pytest.raises(SettingsError, match="top_k must be"):
        Pipeline.from_documents(["Some text."], top_k=0)
    with pytest.raises(SettingsError, match="retrieval_mode must be one of hybrid, dense, bm25"):
        Settings(retrieval_mode="fuzzy")
    with pytest.raises(RagError, match="corpus folder not found"):
        Pipeline.from_folder(tmp_path / "nothing")
    with pytest.raises(RagError, match="two documents are named 'a.txt'"):
        Pipeline.from_documents([Document("a.txt", "One."), Document("a.txt", "Two.")])
    with pytest.raises(RagError, match="document 1 is a int"):
        Pipeline.from_documents([5])
    with pytest.raises(RagError, match="no document with text"):
        Pipeline.from_documents(["   "])
    assert set(rag.__all__) >= {"Pipeline", "Document", "Answer", "RagError"}
    assert Settings(docs_dir="x", index_dir="y").docs_dir == Path("x")  # a str folder is a Path


def test_request_limits_come_from_the_settings_in_use(settings, seed_index, embedder, pipeline):
    question = "Who did Anthropic hire to lead its infrastructure effort?" + " " * 1450  # 1,507 characters
    wide = Pipeline.from_settings(settings.with_overrides(max_question_chars=2000), index=seed_index, embedder=embedder,
                                  reader=pipeline.reader)
    assert wide.ask(question).answer == "Eric Boyd"
    with pytest.raises(QuestionError, match="1507 characters long; the limit is 1000"):
        pipeline.ask(question)
    with TestClient(create_app(settings, pipeline=wide)) as client:
        assert client.post("/ask", json={"question": question}).json()["answer"] == "Eric Boyd"
    with TestClient(create_app(settings, pipeline=pipeline)) as client:
        r = client.post("/ask", json={"question": question})
        assert r.status_code == 422 and "the limit is 1000" in r.json()["detail"]
        r = client.post("/ask", json={"question": "Who?", "top_k": 21})
        assert r.status_code == 422 and r.json()["detail"].startswith("top_k: ")


def test_the_question_is_tokenized_once_per_request(pipeline, monkeypatch):
    counted = []
    tokenizer = pipeline.reader._tokenizer
    real = tokenizer.count
    monkeypatch.setattr(tokenizer, "count", lambda q: counted.append(q) or real(q))
    pipeline.reader._checked = None
    pipeline.ask("Who did Anthropic hire to lead its infrastructure effort?")
    assert counted == ["Who did Anthropic hire to lead its infrastructure effort?"]


def test_the_server_closes_the_pipeline_it_built(settings, monkeypatch):
    closed = []
    monkeypatch.setattr(Pipeline, "close", lambda self: closed.append(self))
    with TestClient(create_app(settings, rebuild=False)) as client:
        assert client.get("/health").status_code == 200
    assert len(closed) == 1


def test_without_the_postgres_extra_the_store_is_a_one_line_error():
    code = textwrap.dedent("""
        import sys
        sys.modules["psycopg"] = None  # as after the plain install: the PostgreSQL extra is not there
        from rag.cli import main
        sys.exit(main(["search", "--store", "postgresql://nobody@127.0.0.1:1/none", "Who?"]))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "pip install 'rag[postgres]'" in out.stderr
