"""`rag bench stores`: the file store against PostgreSQL on the seeds and on a large corpus."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from rag.offline.bench.harness import (
    QUESTIONS_FILE,
    free_port,
    http_json,
    load_questions,
    passage_corpus,
    serve_and_measure,
    start_server,
    stop_server,
)


def run_store_benchmark(dsn: str, squad_file: Path, workdir: Path, passages: int = 10_000, requests: int = 24,
                        seeds: Path = Path("seeds"), questions_file: Path | None = None) -> str:
    """File store against PostgreSQL + pgvector on the seeds (the folder `seeds`, asked the questions of
    `questions_file`, load_questions) and on a corpus of about `passages` passages (one file per distinct
    context of `squad_file` and the extra file beside it, written under `workdir`): index build time, size,
    /ask p50/p95 through a real `rag serve` (one request at a time), its peak memory; on the seeds also
    `rag eval` through each store and two servers on one database answering the same questions. Creates
    (and replaces) the databases rag_bench_seeds and rag_bench_corpus on the server of `dsn`."""
    import shutil

    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from rag.config import Settings
    from rag.offline.evaluation import evaluate_qa_file
    from rag.store.embedding import Embedder
    from rag.store.files.index import index_corpus
    from rag.store.postgres.sync import index_postgres

    shutil.rmtree(workdir, ignore_errors=True)
    corpus = workdir / "docs"
    count, questions_big, _ = passage_corpus(squad_file, passages, corpus, requests)
    qa_file = questions_file or QUESTIONS_FILE
    admin = conninfo_to_dict(dsn)
    embedder = Embedder.from_settings(Settings())
    embedder.warm_up()
    rows, notes = [], []
    for name, docs, questions in (("seeds", seeds, load_questions(questions_file)), (f"{count:,} passages", corpus, questions_big)):
        database = "rag_bench_seeds" if docs == seeds else "rag_bench_corpus"
        with psycopg.connect(make_conninfo(**admin), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {database}")
        store = make_conninfo(**{**admin, "dbname": database})
        index_dir = workdir / f"index-{database}"
        started = time.perf_counter()
        built = index_corpus(Settings(docs_dir=docs, index_dir=index_dir), embedder, progress=False, full=True)
        file_seconds = time.perf_counter() - started
        file_bytes = sum(f.stat().st_size for f in index_dir.rglob("*") if f.is_file())
        report = index_postgres(Settings(docs_dir=docs, store=store), embedder)
        with psycopg.connect(store) as conn:
            pg_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        for kind, args, seconds, size in (("files", {"index": index_dir}, file_seconds, file_bytes),
                                          ("postgresql", {"store": store}, report.seconds, pg_bytes)):
            m, peak = serve_and_measure(questions, requests, docs=docs, **args)
            rows.append(f"| {name} | {kind} | {built.manifest['n_chunks']} | {seconds:.1f} | "
                        f"{built.manifest['n_chunks'] / seconds:.0f} | {size / 2**20:.1f} | {m['p50_ms']:.0f} | "
                        f"{m['p95_ms']:.0f} | {m['errors']} | {peak:.0f} |")
        if docs == seeds:
            a = evaluate_qa_file(Settings(docs_dir=docs, index_dir=index_dir), qa_file, rebuild=False).metrics
            b = evaluate_qa_file(Settings(docs_dir=docs, store=store), qa_file, rebuild=False).metrics
            keys = ("exact_match", "f1", "no_answer_accuracy", "citation_accuracy", "recall_at_k")
            notes.append("rag eval on the seeds, files / postgresql: " + ", ".join(f"{k} {a[k]} / {b[k]}" for k in keys))
            ports = [free_port(), free_port()]
            procs = [start_server(p, store=store) for p in ports]  # the store's recorded folder: unchanged
            try:
                same = all(http_json("POST", f"http://127.0.0.1:{ports[0]}/ask", {"question": q})[1]
                           == http_json("POST", f"http://127.0.0.1:{ports[1]}/ask", {"question": q})[1]
                           for q in questions)
            finally:
                for proc in procs:
                    stop_server(proc)
            notes.append(f"two `rag serve --store` processes on one database, {len(questions)} questions: "
                         f"identical answers and citations: {same}")
    return "\n".join([
        f"machine: {platform.machine()}, {os.cpu_count()} cores; /ask one request at a time, {requests} requests after 3 warm-up",
        "| corpus | store | passages | index build (s) | passages/s | size on disk (MiB) | /ask p50 (ms) | /ask p95 (ms) | errors | server peak memory (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows, *notes])
