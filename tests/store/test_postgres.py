"""The PostgreSQL + pgvector store against a real local server (tests/helpers/postgres_server.py, started by the
`postgres` fixture): same rankings, answers and citations as the file store, incremental per-file
transactions, and clear errors when the database is missing, down or lacks pgvector."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import psycopg
import pytest

from rag.config import Settings

from helpers import SEEDS, cli

QUESTION = "Who did Anthropic hire to lead its infrastructure effort?"


def _database(postgres, name: str) -> str:
    """A fresh, empty database on the test server, with its DSN."""
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return postgres.dsn_for(name)


@pytest.fixture(scope="module")
def seed_store(postgres, settings, embedder):
    """The seed corpus indexed into its own database."""
    from rag.store.postgres.sync import index_postgres

    pg_settings = replace(settings, store=_database(postgres, "rag_seeds"))
    report = index_postgres(pg_settings, embedder)
    assert report.documents == len([p for p in SEEDS.iterdir() if p.suffix in (".txt", ".md")]) and report.embedded > 0
    return pg_settings


def test_rankings_match_the_file_store(seed_store, seed_index, embedder):
    """Dense (HNSW), BM25 (in SQL) and their fusion give the file store's passages, in its order."""
    from rag.pipeline.retrieval import Retriever
    from rag.store.postgres.store import PostgresStore

    store = PostgresStore(seed_store)
    try:
        questions = [QUESTION, "When did Karpathy leave Tesla?", "What is Claude Code?", "Who founded OpenAI?",
                     "xyzzy qwertyuiop"]
        for mode in ("dense", "bm25", "hybrid"):
            for q in questions:
                files = Retriever(seed_index, embedder, mode=mode, top_k=5).run(q)
                pg = Retriever(store, embedder, mode=mode, top_k=5).run(q)
                assert [p.chunk for p in pg] == [p.chunk for p in files], (mode, q)
    finally:
        store.close()


def test_answer_and_citation_match_the_file_store(seed_store, pipeline, embedder):
    from rag.pipeline.qa import Pipeline

    pg = Pipeline.from_settings(seed_store, embedder=embedder, reader=pipeline.reader, rebuild=False)
    try:
        a, b = pipeline.run(QUESTION), pg.run(QUESTION)
        assert a.answer is not None and b.answer == a.answer and b.score == pytest.approx(a.score, abs=1e-4)
        assert b.citations == a.citations
        c = b.citations[0]
        assert pg.documents[c.source].text[c.start : c.end] == b.answer
        assert pg.describe()["store"] == {"kind": "postgresql", "database": pg.retriever.store.where, "reachable": True}
    finally:
        pg.retriever.store.close()


def test_a_question_reads_one_snapshot_of_the_store(seed_store):
    """What another process commits while a question is being answered is not seen by that question."""
    from rag.store.postgres.store import PostgresStore

    store = PostgresStore(seed_store)
    source = sorted(store.documents)[0]
    before = store.documents[source].text
    try:
        with store.snapshot():
            assert store.documents[source].text == before
            with psycopg.connect(seed_store.store) as other:
                other.execute("UPDATE rag_documents SET text = text || ' Appended.' WHERE source = %s", (source,))
            assert store.documents[source].text == before  # still the snapshot's state
        assert store.documents[source].text == before + " Appended."  # the next question sees it
    finally:
        with psycopg.connect(seed_store.store) as other:
            other.execute("UPDATE rag_documents SET text = %s WHERE source = %s", (before, source))
        store.close()


def test_incremental_updates_one_transaction_per_file(postgres, embedder, tmp_path, monkeypatch):
    import rag.store.postgres.store as pgmod
    from rag.store.postgres.sync import index_postgres

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Alpha Corp was founded in 1999 by Ada Lovelace. It makes engines.")
    (docs / "b.txt").write_text("Beta Ltd sells bicycles in Berlin. Its founder is Bob.")
    s = Settings(docs_dir=docs, store=_database(postgres, "rag_incremental"))
    first = index_postgres(s, embedder)
    assert (first.documents, first.added_or_changed, first.removed) == (2, 2, 0)

    def chunk_ids(source):
        with psycopg.connect(s.store) as conn:
            return [r[0] for r in conn.execute("SELECT id FROM rag_chunks WHERE source = %s ORDER BY ord", (source,))]

    a_ids = chunk_ids("a.txt")
    (docs / "b.txt").write_text("Beta Ltd sells tandems in Hamburg now. Its founder is Bob.")
    (docs / "c.txt").write_text("Gamma Inc studies comets.")
    second = index_postgres(s, embedder)
    assert (second.documents, second.added_or_changed, second.removed, second.embedded) == (3, 2, 0, 2)
    assert chunk_ids("a.txt") == a_ids  # unchanged: not rewritten
    store = pgmod.PostgresStore(s)
    try:
        assert "Hamburg" in store.documents["b.txt"].text
    finally:
        store.close()

    # A failure while writing a file rolls that file back whole; files written before it stay.
    (docs / "c.txt").unlink()
    (docs / "d.txt").write_text("Delta GmbH repairs clocks.")
    (docs / "e.txt").write_text("Epsilon SA brews coffee.")
    real = pgmod.lexemes
    calls = {"n": 0}

    def failing(tokens):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash while writing e.txt")
        return real(tokens)

    monkeypatch.setattr(pgmod, "lexemes", failing)
    with pytest.raises(RuntimeError):
        index_postgres(s, embedder)
    monkeypatch.setattr(pgmod, "lexemes", real)
    with psycopg.connect(s.store) as conn:
        docs_now = dict(conn.execute("SELECT d.source, count(c.id) FROM rag_documents d LEFT JOIN rag_chunks c"
                                     " USING (source) GROUP BY d.source").fetchall())
    assert docs_now == {"a.txt": 1, "b.txt": 1, "d.txt": 1}  # c removed, d written, e not half-written
    third = index_postgres(s, embedder)  # the next run finishes the job
    assert (third.documents, third.added_or_changed) == (4, 1)


def test_only_the_indexed_folder_updates_the_store(postgres, embedder, tmp_path):
    """A server started with no folder uses the shared store as it is, kept in step with the folder it was
    indexed from; another folder given is refused (it must not rewrite the store to that folder); a file
    that cannot be converted does not leave the store looking stale forever."""
    from rag.store.files.index import CorpusFolderMismatchError
    from rag.store.postgres.sync import index_postgres, open_postgres

    docs, other = tmp_path / "docs", tmp_path / "other"
    docs.mkdir()
    other.mkdir()
    (docs / "a.txt").write_text("Alpha Corp was founded in 1999 by Ada Lovelace.")
    (docs / "broken.pdf").write_bytes(b"not a pdf at all")
    (other / "z.txt").write_text("Zeta is somewhere else entirely.")
    s = Settings(docs_dir=docs, store=_database(postgres, "rag_folders"))
    report = index_postgres(s, embedder)
    assert report.documents == 1 and "broken.pdf" in report.skipped
    open_postgres(s, embedder, rebuild=False).close()  # not stale: broken.pdf was read, and skipped
    with pytest.raises(CorpusFolderMismatchError, match="was indexed from .*docs, not .*other"):
        open_postgres(replace(s, docs_dir=other), embedder, rebuild=True)
    store = open_postgres(replace(s, docs_dir=None), embedder, rebuild=True)
    try:
        assert sorted(store.documents) == ["a.txt"] and store.docs_dir == docs.resolve()
    finally:
        store.close()


def test_settings_mismatch_and_schema_version_are_clear_errors(postgres, embedder, tmp_path):
    from rag.store.postgres.store import StoreError
    from rag.store.postgres.sync import index_postgres, open_postgres

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Alpha Corp was founded in 1999 by Ada Lovelace.")
    s = Settings(docs_dir=docs, store=_database(postgres, "rag_mismatch"))
    index_postgres(s, embedder)
    docs.rename(tmp_path / "moved")  # the folder it was indexed from is not here: nothing to rebuild from
    other = replace(s, chunk_max_chars=300, docs_dir=None)
    with pytest.raises(StoreError, match="built with other settings"):
        open_postgres(other, embedder)
    with psycopg.connect(s.store) as conn:
        conn.execute("UPDATE rag_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99"):
        open_postgres(s, embedder)


def test_cli_errors_are_one_line(postgres, tmp_path):
    """Unreachable server, missing database, and a user who may not enable pgvector: one line, exit 1."""
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS rag_noext WITH (FORCE)")
        conn.execute("DROP ROLE IF EXISTS rag_plain")
        conn.execute("CREATE ROLE rag_plain LOGIN")
        conn.execute("CREATE DATABASE rag_noext OWNER rag_plain")
    dead = f"postgresql://postgres@127.0.0.1:{_closed_port()}/rag_test"
    plain = postgres.dsn_for("rag_noext").replace("postgres@", "rag_plain@")
    cases = [
        (["index", "--store", dead], "cannot connect to PostgreSQL at 127.0.0.1"),
        (["ask", "--store", postgres.dsn_for("no_such_db"), QUESTION], 'database "no_such_db" does not exist'),
        (["index", "--store", plain], "does not have the pgvector extension enabled"),
        (["index", "--store", "postgresql://[bad"], "not a valid PostgreSQL DSN"),
    ]
    for args, expected in cases:
        r = cli(*args, timeout=120)
        assert r.returncode == 1, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rag: error:") and expected in lines[0], (args, r.stderr)


def test_server_answers_503_while_the_database_is_down(postgres, seed_store, pipeline, embedder):
    from fastapi.testclient import TestClient

    from rag.pipeline.qa import Pipeline
    from rag.service.server import create_app

    pg = Pipeline.from_settings(seed_store, embedder=embedder, reader=pipeline.reader, rebuild=False)
    try:
        with TestClient(create_app(seed_store, pipeline=pg)) as client:
            ok = client.post("/ask", json={"question": QUESTION})
            assert ok.status_code == 200 and ok.json()["answer"]
            assert client.get("/health").json()["store"]["kind"] == "postgresql"
            postgres.stop()
            try:
                down = client.post("/ask", json={"question": QUESTION})
                assert down.status_code == 503 and "PostgreSQL" in down.json()["detail"], down.text
                assert client.get("/health").status_code == 503
            finally:
                postgres.start()
            again = client.post("/ask", json={"question": QUESTION})
            assert again.status_code == 200 and again.json()["answer"] == ok.json()["answer"]
    finally:
        pg.retriever.store.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_share_the_store(postgres, tmp_path):
    """The scale-out shape: what one process indexes is seen by another (with no corpus folder of its own)
    once committed."""
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SEEDS / sorted(p.name for p in SEEDS.iterdir() if p.suffix == ".txt")[0], docs)
    dsn = _database(postgres, "rag_shared")
    (docs / "zeta.txt").write_text("The Zeta Observatory was opened in 1911 by the astronomer Mira Castellano.")
    r = cli("index", "--store", dsn, "--docs", docs, timeout=300)
    assert r.returncode == 0 and "indexed 2 documents" in r.stdout, r.stderr
    docs.rename(tmp_path / "elsewhere")  # the other process has no corpus folder of its own
    r = cli("ask", "--store", dsn, "--json", "Who opened the Zeta Observatory?", timeout=300)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["answer"] == "Mira Castellano" and answer["citations"][0]["source"] == "zeta.txt"


def test_collections_on_the_postgres_store_each_get_a_schema(postgres, tmp_path):
    """A managed collection on PostgreSQL: its own schema (rag_c_NAME), uploads answered at once, a source
    filter inside the SQL, a deleted document gone from answers, a deleted collection's schema dropped."""
    from fastapi.testclient import TestClient

    from rag.service.server import create_app

    dsn = _database(postgres, "rag_collections")
    docs = tmp_path / "docs"
    shutil.copytree(SEEDS, docs)
    s = Settings(docs_dir=docs, store=dsn, data_dir=tmp_path / "data")
    harbour = b"The harbour master of Inis Mor is called Sean Ryan. He took the post in 2019 after years at sea.\n"
    ferry = b"The ferry to Inis Mor leaves from Rossaveal every morning at nine. Its captain is Nora Walsh.\n"

    def schemas():
        with psycopg.connect(dsn) as conn:
            return {r[0] for r in conn.execute("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'rag_c_%'")}

    with TestClient(create_app(s)) as client:
        assert client.put("/collections/team-a").status_code == 201
        for name, data in (("harbour.txt", harbour), ("ferry.txt", ferry)):
            assert client.post("/collections/team-a/documents", files={"file": (name, data)}).status_code == 201
        assert schemas() == {"rag_c_team_ha"}
        q = {"question": "Who is the harbour master of Inis Mor?"}
        assert client.post("/collections/team-a/ask", json=q).json()["answer"] == "Sean Ryan"
        only = client.post("/collections/team-a/ask", json={**q, "sources": ["ferry.txt"]}).json()
        assert {p["source"] for p in only["passages"]} == {"ferry.txt"}
        default = client.post("/ask", json={"question": "Who did Anthropic hire to lead its infrastructure effort?"}).json()
        assert default["answer"] == "Eric Boyd"  # the default collection is the public schema's store
        assert client.delete("/collections/team-a/documents/harbour.txt").status_code == 204
        after = client.post("/collections/team-a/ask", json=q).json()
        assert all(p["source"] != "harbour.txt" for p in after["passages"])
        assert client.delete("/collections/team-a").status_code == 204
        assert schemas() == set()


def test_feedback_on_the_postgres_store_goes_to_its_database(postgres, tmp_path):
    """With the PostgreSQL store, verdicts are rows of a rag_feedback table in its database (no SQLite file),
    they survive a restart, and `rag feedback export` / `stats` read them back from there."""
    from fastapi.testclient import TestClient

    from rag.service.server import create_app

    dsn = _database(postgres, "rag_feedback_db")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "harbour.txt").write_text("The harbour master of Inis Mor is called Sean Ryan. He took the post in 2019.\n")
    s = Settings(docs_dir=docs, store=dsn, data_dir=tmp_path / "data")
    question = "Who is the harbour master of Inis Mor?"
    with TestClient(create_app(s)) as client:
        answer = client.post("/ask", json={"question": question}).json()
        assert answer["answer"] == "Sean Ryan"
        cite = answer["citations"][0]
        r = client.post("/feedback", json={"question": question, "answer": "Sean Ryan", "verdict": "right",
                                           "score": answer["score"],
                                           "cited": {k: cite[k] for k in ("source", "start", "end")}})
        assert r.status_code == 201
        bad = client.post("/feedback", json={"question": question, "answer": None, "verdict": "wrong",
                                             "correct": {"source": "harbour.txt", "start": 5, "end": 500}})
        assert bad.status_code == 422
    with TestClient(create_app(s)) as client:  # a restart: the same table
        text = client.get("/api/documents/harbour.txt").json()["text"]
        start = text.index("2019")
        r = client.post("/feedback", json={"question": "When did he take the post?", "answer": None, "verdict": "wrong",
                                           "correct": {"source": "harbour.txt", "start": start, "end": start + 4}})
        assert r.status_code == 201 and r.json()["id"] == 2
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT verdict, answer, correct_quote FROM rag_feedback ORDER BY id").fetchall()
    assert rows == [("right", "Sean Ryan", None), ("wrong", None, "2019")]
    assert not (tmp_path / "data" / "feedback.sqlite").exists()
    out = cli("feedback", "export", "--store", dsn, "--docs", docs, "--squad", tmp_path / "team.json")
    assert out.returncode == 0, out.stderr
    qas = [qa for a in json.loads((tmp_path / "team.json").read_text())["data"] for qa in a["paragraphs"][0]["qas"]]
    assert [qa["answers"][0]["text"] for qa in qas] == ["Sean Ryan", "2019"]
    stats = cli("feedback", "stats", "--store", dsn)
    assert stats.returncode == 0 and "2 verdicts: 1 right, 1 wrong" in stats.stdout
