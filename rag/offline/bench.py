"""Benchmark (`rag bench`): start the real server, measure /ask latency and throughput at several
concurrency levels over the seed questions, and the server's peak memory; print a table."""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

QUESTIONS_FILE = Path("eval/qa.jsonl")
FALLBACK_QUESTIONS = [
    "Who did Anthropic hire to lead its infrastructure effort?",
    "What feature did Anthropic launch for enterprise clients?",
    "Who mentored Karpathy during his PhD?",
    "What is the capital of France?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, docs: Path | None = None, index: Path | None = None, timeout: float = 180.0,
                 store: str | None = None) -> subprocess.Popen:
    """`rag serve` in a child process; returns once /health answers (or raises, having stopped it)."""
    cmd = [sys.executable, "-m", "rag.cli", "serve", "--port", str(port)]
    if docs:
        cmd += ["--docs", str(docs)]
    if index:
        cmd += ["--index", str(index)]
    if store:
        cmd += ["--store", store]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited early: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError("the server did not become ready in time")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_questions() -> list[str]:
    if QUESTIONS_FILE.is_file():
        return [json.loads(line)["question"] for line in QUESTIONS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return FALLBACK_QUESTIONS


def measure(url: str, questions: list[str], concurrency: int, n: int) -> dict:
    """Send n requests with `concurrency` in flight; latency percentiles and throughput."""
    def one(i: int) -> tuple[float, int]:
        started = time.perf_counter()
        r = client.post(url, json={"question": questions[i % len(questions)]}, timeout=120)
        return time.perf_counter() - started, r.status_code

    with httpx.Client() as client, ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        results = list(pool.map(one, range(n)))
        wall = time.perf_counter() - started
    latencies = np.array([r[0] for r in results]) * 1000
    return {
        "concurrency": concurrency,
        "requests": n,
        "errors": sum(r[1] != 200 for r in results),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "throughput_rps": n / wall,
    }


def run_benchmark(requests_per_level: int = 48, levels: list[int] | None = None, docs: Path | None = None,
                  index: Path | None = None) -> str:
    levels = levels or [1, 4, 16]
    questions = load_questions()
    port = free_port()
    proc = start_server(port, docs, index)
    try:
        url = f"http://127.0.0.1:{port}/ask"
        measure(url, questions, 1, 3)  # warm-up
        rows = [measure(url, questions, c, requests_per_level) for c in levels]
        peak = peak_rss_mib(proc.pid)
    finally:
        stop_server(proc)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{requests_per_level} requests per level over {len(questions)} questions",
        "| concurrency | requests | errors | p50 (ms) | p95 (ms) | throughput (req/s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
              f"{r['throughput_rps']:.1f} |" for r in rows]
    lines.append(f"server peak memory (VmHWM): {peak:.0f} MiB")
    return "\n".join(lines)


def run_incremental_benchmark(squad_file: Path, n_files: int = 1000, workdir: Path = Path("build/incremental-bench")) -> str:
    """Index a corpus of `n_files` text files (distinct contexts of a SQuAD-format file) in full, change one
    file, index again incrementally, and compare the two times; also check the result equals a full rebuild."""
    import shutil

    from rag.config import Settings
    from rag.embedding import Embedder
    from rag.index import index_corpus
    from rag.offline.squad import load_squad

    contexts = list(dict.fromkeys(q.context for q in load_squad(squad_file)))[:n_files]
    if len(contexts) < n_files:
        raise ValueError(f"{squad_file} has only {len(contexts)} distinct contexts")
    shutil.rmtree(workdir, ignore_errors=True)
    docs = workdir / "docs"
    docs.mkdir(parents=True)
    for i, text in enumerate(contexts):
        (docs / f"{i:05d}.txt").write_text(text, encoding="utf-8")
    settings = Settings(docs_dir=docs, index_dir=workdir / "index")
    embedder = Embedder.from_settings(settings)
    embedder.warm_up()
    timings = {}
    started = time.perf_counter()
    full = index_corpus(settings, embedder, progress=True, full=True)
    timings["full"] = time.perf_counter() - started
    changed = docs / f"{n_files // 2:05d}.txt"
    changed.write_text(changed.read_text(encoding="utf-8") + " One more sentence was added to this file.", encoding="utf-8")
    started = time.perf_counter()
    incremental = index_corpus(settings, embedder, progress=False)
    timings["incremental"] = time.perf_counter() - started
    rebuilt = index_corpus(settings.with_overrides(index_dir=workdir / "rebuilt"), embedder, progress=False, full=True)
    same = ([(c.source, c.start, c.end) for c in incremental.chunks] == [(c.source, c.start, c.end) for c in rebuilt.chunks]
            and np.allclose(incremental.dense.reconstruct_n(0, incremental.dense.ntotal),
                            rebuilt.dense.reconstruct_n(0, rebuilt.dense.ntotal), atol=1e-5))
    build = incremental.manifest["build"]
    return "\n".join([
        f"corpus: {n_files} files ({full.manifest['n_chunks']} passages) from {squad_file.name}; one file changed",
        "| build | seconds | passages embedded | share of the full build |",
        "|---|---:|---:|---:|",
        f"| full (`rag index --full`) | {timings['full']:.1f} | {full.manifest['build']['passages_embedded']} | 100% |",
        f"| incremental (`rag index`) | {timings['incremental']:.1f} | {build['passages_embedded']} | "
        f"{100 * timings['incremental'] / timings['full']:.1f}% |",
        f"incremental result equals a full rebuild (chunks, vectors within 1e-5): {same}",
    ])


def run_store_benchmark(dsn: str, squad_file: Path, passages: int = 10_000, requests: int = 24,
                        workdir: Path = Path("build/store-bench")) -> str:
    """File store against PostgreSQL + pgvector on the seeds and on a corpus of about `passages` passages
    (one file per distinct context of `squad_file` and the extra file beside it): index build time, size,
    /ask p50/p95 through a real `rag serve` (one request at a time), its peak memory; on the seeds also
    `rag eval` through each store and two servers on one database answering the same questions. Creates
    (and replaces) the databases rag_bench_seeds and rag_bench_corpus on the server of `dsn`."""
    import shutil

    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from rag.chunking import chunk_document
    from rag.config import Settings
    from rag.embedding import Embedder
    from rag.index import index_corpus
    from rag.offline.evaluation import evaluate_qa_file
    from rag.offline.squad import load_squad
    from rag.postgres import index_postgres
    from rag.types import Document

    shutil.rmtree(workdir, ignore_errors=True)
    corpus = workdir / "docs"
    corpus.mkdir(parents=True)
    extra = squad_file.with_name("reader-train-extra.squad2.json")
    questions_big, count, i, seen = [], 0, 0, set()
    for path in [squad_file] + ([extra] if extra.is_file() else []):
        for q in load_squad(path):
            if count >= passages:
                break
            if q.context in seen:
                continue
            seen.add(q.context)
            (corpus / f"{i:06d}.txt").write_text(q.context, encoding="utf-8")
            count += len(chunk_document(Document("x", q.context), Settings.chunk_max_chars, Settings.chunk_overlap_sentences))
            i += 1
            if path == squad_file and q.answers and len(questions_big) < requests:
                questions_big.append(q.question)
    seeds = Path("seeds")
    admin = conninfo_to_dict(dsn)
    embedder = Embedder.from_settings(Settings())
    embedder.warm_up()
    rows, notes = [], []
    for name, docs, questions in (("seeds", seeds, load_questions()), (f"{count:,} passages", corpus, questions_big)):
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
            port = free_port()
            proc = start_server(port, docs, **args)
            try:
                url = f"http://127.0.0.1:{port}/ask"
                measure(url, questions, 1, 3)
                m = measure(url, questions, 1, requests)
                peak = peak_rss_mib(proc.pid)
            finally:
                stop_server(proc)
            rows.append(f"| {name} | {kind} | {built.manifest['n_chunks']} | {seconds:.1f} | "
                        f"{built.manifest['n_chunks'] / seconds:.0f} | {size / 2**20:.1f} | {m['p50_ms']:.0f} | "
                        f"{m['p95_ms']:.0f} | {m['errors']} | {peak:.0f} |")
        if docs == seeds:
            a = evaluate_qa_file(Settings(docs_dir=docs, index_dir=index_dir), QUESTIONS_FILE, rebuild=False).metrics
            b = evaluate_qa_file(Settings(docs_dir=docs, store=store), QUESTIONS_FILE, rebuild=False).metrics
            keys = ("exact_match", "f1", "no_answer_accuracy", "citation_accuracy", "recall_at_k")
            notes.append("rag eval on the seeds, files / postgresql: " + ", ".join(f"{k} {a[k]} / {b[k]}" for k in keys))
            ports = [free_port(), free_port()]
            procs = [start_server(p, workdir / "absent", store=store) for p in ports]
            try:
                same = all(httpx.post(f"http://127.0.0.1:{ports[0]}/ask", json={"question": q}, timeout=120).json()
                           == httpx.post(f"http://127.0.0.1:{ports[1]}/ask", json={"question": q}, timeout=120).json()
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
