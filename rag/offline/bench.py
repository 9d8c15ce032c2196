"""Benchmarks (`rag bench serve|backends|scale|stores|incremental|curve`). `rag bench serve`: start the real
server, measure /ask latency and throughput at several concurrency levels over the seed questions, and the
server's peak memory; print a table. The others are the run_*_benchmark functions below."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from rag.config import REPO_DIR

QUESTIONS_FILE = REPO_DIR / "eval" / "qa.jsonl"  # the seed questions, found from the package, not the working folder
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
                 store: str | None = None, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """`rag serve` in a child process; returns once /health answers (or raises, having stopped it)."""
    cmd = [sys.executable, "-m", "rag.cli", "serve", "--port", str(port), *extra]
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
            if http_json("GET", f"http://127.0.0.1:{port}/health", timeout=2)[0] == 200:
                return proc
        except (OSError, ValueError):  # not listening yet (urllib's URLError is an OSError)
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError("the server did not become ready in time")


def http_json(method: str, url: str, body: object = None, timeout: float = 120) -> tuple[int, object]:
    """(status, parsed JSON body) of one request, through the standard library: the benchmarks run after
    the plain install, which has no HTTP client package. A non-JSON body parses to None."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve_and_measure(questions: list[str], requests: int, **server) -> tuple[dict, float]:
    """Start `rag serve` (start_server's arguments), send 3 warm-up questions and then `requests` one at a
    time; the /ask measurement and the server's peak memory (MiB)."""
    port = free_port()
    proc = start_server(port, **server)
    try:
        url = f"http://127.0.0.1:{port}/ask"
        measure(url, questions, 1, 3)
        return measure(url, questions, 1, requests), peak_rss_mib(proc.pid)
    finally:
        stop_server(proc)


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_questions(path: Path | None = None) -> list[str]:
    """The questions of a JSONL set (one {"question": ...} a line). By default the repository's
    eval/qa.jsonl, or a few built-in questions where it is absent (an installed package); a file given
    must exist."""
    if path is None:
        if not QUESTIONS_FILE.is_file():
            return FALLBACK_QUESTIONS
        path = QUESTIONS_FILE
    return [json.loads(line)["question"] for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _shown(path: Path) -> Path:
    """A path as a report names it: relative to the working folder when inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def measure(url: str, questions: list[str], concurrency: int, n: int) -> dict:
    """Send n requests with `concurrency` in flight; latency percentiles and throughput."""
    def one(i: int) -> tuple[float, int]:
        started = time.perf_counter()
        status, _ = http_json("POST", url, {"question": questions[i % len(questions)]})
        return time.perf_counter() - started, status

    with ThreadPoolExecutor(concurrency) as pool:
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
                  index: Path | None = None, questions_file: Path | None = None,
                  workers: list[int] | None = None) -> str:
    """`rag bench serve`: `requests_per_level` /ask requests at each concurrency level through a real
    `rag serve` (once per `--workers` count asked for), over the questions of `questions_file`
    (load_questions); memory is the peak resident size summed over the server's processes."""
    from rag.runtime.cpu import flags_summary

    levels = levels or [1, 4, 16]
    questions = load_questions(questions_file)
    table = []
    for count in workers or [0]:
        port = free_port()
        proc = start_server(port, docs, index, extra=("--workers", str(count)) if count else ())
        try:
            url = f"http://127.0.0.1:{port}/ask"
            measure(url, questions, 1, 3 * max(1, count))  # warm-up (each worker)
            rows = [measure(url, questions, c, requests_per_level) for c in levels]
            peak = sum(peak_rss_mib(pid) for pid in process_tree(proc.pid))
        finally:
            stop_server(proc)
        table += [f"| {count or 'default'} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.0f} | "
                  f"{r['p95_ms']:.0f} | {r['throughput_rps']:.1f} | {peak:.0f} |" for r in rows]
    return "\n".join([
        f"machine: {platform.machine()}, {os.cpu_count()} cores ({flags_summary()}), Python "
        f"{platform.python_version()}; {requests_per_level} requests per level over {len(questions)} questions",
        "| workers | concurrency | requests | errors | p50 (ms) | p95 (ms) | throughput (req/s) | peak memory (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *table,
    ])


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (from /proc's children lists)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def run_incremental_benchmark(squad_file: Path, workdir: Path, n_files: int = 1000) -> str:
    """Index a corpus of `n_files` text files (distinct contexts of a SQuAD-format file) in full, change one
    file, index again incrementally, and compare the two times; also check the result equals a full rebuild."""
    import shutil

    from rag.config import Settings
    from rag.offline.squad import load_squad
    from rag.store.embedding import Embedder
    from rag.store.files.index import index_corpus

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


def passage_corpus(squad_file: Path, passages: int, folder: Path, n_questions: int,
                   repeat: bool = False) -> tuple[int, list[str], int]:
    """Write one text file per distinct context of `squad_file` (then of the extra file beside it) into
    `folder` until they make about `passages` passages; return the passage count, up to `n_questions`
    answerable questions about the written contexts (for /ask timings) and how many of the passages are
    distinct. With `repeat`, when the distinct contexts run out, write them again as further files (copies
    cost what new text costs to embed, store and search; the data holds about 19,700 distinct passages)."""
    from rag.config import Settings
    from rag.ingest.chunking import chunk_document
    from rag.offline.squad import load_squad
    from rag.records import Document

    folder.mkdir(parents=True)
    extra = squad_file.with_name("reader-train-extra.squad2.json")
    questions, count, seen = [], 0, set()
    contexts: list[tuple[str, int]] = []  # each distinct context and its passage count
    for path in [squad_file] + ([extra] if extra.is_file() else []):
        for q in load_squad(path):
            if count >= passages:
                break
            if q.context in seen:
                continue
            seen.add(q.context)
            n = len(chunk_document(Document("x", q.context), Settings.chunk_max_chars, Settings.chunk_overlap_sentences))
            (folder / f"{len(contexts):06d}.txt").write_text(q.context, encoding="utf-8")
            contexts.append((q.context, n))
            count += n
            if path == squad_file and q.answers and len(questions) < n_questions:
                questions.append(q.question)
    distinct = count
    if count < passages and repeat and contexts:
        copy = 1
        while count < passages:
            for i, (context, n) in enumerate(contexts):
                if count >= passages:
                    break
                (folder / f"{i:06d}-copy{copy}.txt").write_text(context, encoding="utf-8")
                count += n
            copy += 1
    if count < passages:
        raise ValueError(f"{squad_file} and the extra file beside it hold only {count:,} passages, not {passages:,}")
    return count, questions, distinct


STAGES = ("embed question", "dense search", "BM25 search", "fuse + fetch passages", "tokenize windows",
          "reader forward pass", "span search", "calibrate + cite")


@contextlib.contextmanager
def _timing_calls(seconds: dict[str, float], calls: dict[str, list[tuple[object, str]]]):
    """While open, each (object, method name) listed under a stage in `calls` is wrapped on that object so
    the seconds its calls take add up in seconds[stage]; the objects are as before afterwards."""
    missing = object()
    wrapped = []

    def timed(stage: str, method):
        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                seconds[stage] += time.perf_counter() - started
        return call

    try:
        for stage, targets in calls.items():
            for obj, name in targets:
                wrapped.append((obj, name, vars(obj).get(name, missing)))
                setattr(obj, name, timed(stage, getattr(obj, name)))
        yield
    finally:
        for obj, name, before in reversed(wrapped):
            if before is missing:
                delattr(obj, name)
            else:
                setattr(obj, name, before)


def profile_stages(pipeline, questions: list[str], rounds: int = 3) -> dict[str, list[float]]:
    """Milliseconds spent in each stage of one answer, per question: `pipeline.run` itself, its stage
    timings ("retrieve", "calibrate + cite"), and within them the calls it makes to the embedder, the
    store, the retriever's BM25 search and the reader, each timed where it is made."""
    retriever, reader = pipeline.retriever, pipeline.reader
    seconds: dict[str, float] = {}
    calls = {"embed question": [(retriever.embedder, "run")], "dense search": [(retriever.store, "dense_ranking")],
             "BM25 search": [(retriever, "bm25_ranking")], "tokenize windows": [(reader, "encode"), (reader, "kept_windows")],
             "reader forward pass": [(reader, "logits")], "span search": [(reader, "readings")]}
    times: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    with _timing_calls(seconds, calls):
        for question in questions * rounds:
            seconds.update(dict.fromkeys(calls, 0.0))
            stages: dict[str, float] = {}
            started = time.perf_counter()
            pipeline.run(question, timings=stages)
            total = time.perf_counter() - started
            seconds["fuse + fetch passages"] = stages["retrieve"] - sum(
                seconds[s] for s in ("embed question", "dense search", "BM25 search"))
            seconds["calibrate + cite"] = stages["calibrate + cite"]
            for stage in STAGES:
                times[stage].append(seconds[stage] * 1000)
            times["total"].append(total * 1000)
    return times


def run_backend_benchmark(workdir: Path, requests: int = 48, questions_file: Path | None = None) -> str:
    """The reader's runtimes side by side on the seeds: torch fp32 (and bf16 where the CPU has it), its fp32
    ONNX export, and its dynamic and static int8 ONNX exports through ONNX Runtime (made in copies of the
    shipped reader under `workdir`). For each:
    /ask p50/p95 through a real `rag serve` (one request at a time), answer quality (`rag eval` on the
    hand-written set `questions_file`, default the repository's eval/qa.jsonl, in process) and the
    per-stage profile."""
    import shutil

    from rag.config import PACKAGED_READER_DIR, Settings
    from rag.offline.evaluation import load_qa, run_items
    from rag.offline.export import export_reader
    from rag.pipeline.fast_start import prepare_fast_start
    from rag.pipeline.qa import Pipeline
    from rag.store.embedding import Embedder
    from rag.store.files.index import open_index

    shutil.rmtree(workdir, ignore_errors=True)
    int8_folder, static_folder = workdir / "reader", workdir / "reader-static"
    shutil.copytree(PACKAGED_READER_DIR, int8_folder)
    shutil.copytree(PACKAGED_READER_DIR, static_folder)
    export_reader(str(int8_folder))
    export_reader(str(static_folder), static=True)
    base = Settings()
    prepare_fast_start(base)
    embedder = Embedder.from_settings(base)
    index = open_index(base, embedder)
    qa_file = questions_file or QUESTIONS_FILE
    questions, items = load_questions(qa_file), load_qa(qa_file)
    from rag.runtime.cpu import has_bf16_dot_product

    runs = (("torch fp32", PACKAGED_READER_DIR, "torch"),
            *((("torch bf16", PACKAGED_READER_DIR, "torch-bf16"),) if has_bf16_dot_product() else ()),
            ("onnxruntime fp32", PACKAGED_READER_DIR, "onnx-fp32"), ("onnxruntime int8", int8_folder, "onnx"),
            ("onnxruntime int8 static", static_folder, "onnx"))
    rows, profiles, answers = [], {}, {}
    for name, folder, backend in runs:
        settings = base.with_overrides(reader_model=str(folder), reader_backend=backend)
        pipeline = Pipeline.from_settings(settings, index=index, embedder=embedder, rebuild=False)
        if pipeline.reader.runtime != name.removesuffix(" static"):
            raise RuntimeError(f"asked for {name}, the reader runs on {pipeline.reader.runtime}")
        report = run_items(pipeline, items, name=name)
        answers[name] = [r.prediction for r in report.rows]
        profiles[name] = profile_stages(pipeline, questions)
        del pipeline
        m, _ = serve_and_measure(questions, requests, extra=("--reader", str(folder), "--reader-backend", backend))
        q = report.metrics
        changed = sum(a != b for a, b in zip(answers[name], answers["torch fp32"]))
        rows.append(f"| {name} | {m['p50_ms']:.0f} | {m['p95_ms']:.0f} | {np.median(profiles[name]['reader forward pass']):.0f} | "
                    f"{q['exact_match']:.1f} | {q['f1']:.1f} | {q['no_answer_accuracy']:.1f} | {changed} of {len(items)} |")
    from rag.runtime.choice import measure
    from rag.runtime.cpu import flags_summary

    auto = Pipeline.from_settings(base.with_overrides(measure_runtime=True), index=index, embedder=embedder,
                                  rebuild=False).reader
    auto.warm_up()
    choice = measure(auto, has_export=True)  # measured afresh, as the first `rag serve` on a machine does
    lines = [
        f"auto (what `rag serve` runs here): {choice.backend}; {choice.why}",
        "",
        f"machine: {platform.machine()}, {os.cpu_count()} cores; {flags_summary()}; /ask through `rag serve`, one request at a "
        f"time, {requests} requests over {len(questions)} seed questions after 3 warm-up; quality: `rag eval` on {_shown(qa_file)}",
        "| reader runtime | /ask p50 (ms) | /ask p95 (ms) | forward pass p50 (ms) | EM | F1 | NoAns acc. | answers unlike torch fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"per-stage p50 in ms (in process, {len(questions)} questions x 3):",
        "| stage | " + " | ".join(name for name, _, _ in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for stage in (*STAGES, "total"):
        lines.append(f"| {stage} | " + " | ".join(f"{np.median(profiles[name][stage]):.1f}" for name, _, _ in runs) + " |")
    return "\n".join(lines)


def _run_measured(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run a command to its end, its output in `log`; its wall seconds and peak resident memory (MiB)."""
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {log.read_text(encoding='utf-8')[-2000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def run_scale_benchmark(squad_file: Path, sizes: list[int], workdir: Path, plot: Path, requests: int = 48) -> str:
    """How cost grows with the corpus: for each size, a corpus of that many passages (one file per distinct
    SQuAD context, then copies of them past the ~19,700 distinct ones), `rag index --full` in a child
    process (its build time as the index records it, the process's wall time and peak memory, the index's
    size on disk), then /ask p50/p95 through `rag serve` (one request at a time, questions about the corpus)
    and the server's peak memory. The corpora and indexes go under `workdir`; writes a plot to `plot`."""
    import shutil

    from rag.config import Settings
    from rag.pipeline.fast_start import prepare_fast_start

    for line in prepare_fast_start(Settings()):  # first, so no row's `rag index` includes the one-time exports
        print(line, file=sys.stderr)
    rows = []
    for size in sorted(sizes):
        folder = workdir / f"{size}"
        shutil.rmtree(folder, ignore_errors=True)
        count, questions, distinct = passage_corpus(squad_file, size, folder / "docs", requests, repeat=True)
        index = folder / "index"
        print(f"[{size:,} passages] indexing (progress in {folder / 'index.log'})…", file=sys.stderr, flush=True)
        wall, peak_index = _run_measured([sys.executable, "-m", "rag.cli", "index", "--full", "--docs",
                                          str(folder / "docs"), "--index", str(index)], folder / "index.log")
        manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
        size_mib = sum(f.stat().st_size for f in index.rglob("*") if f.is_file()) / 2**20
        m, peak_server = serve_and_measure(questions, requests, docs=folder / "docs", index=index, timeout=900,
                                           extra=("--no-rebuild",))
        rows.append({"passages": manifest["n_chunks"], "distinct_passages": distinct,
                     "documents": manifest["n_documents"],
                     "build_seconds": manifest["build_seconds"], "index_wall_seconds": wall,
                     "passages_per_second": manifest["n_chunks"] / manifest["build_seconds"],
                     "index_mib": size_mib, "index_peak_mib": peak_index, "server_peak_mib": peak_server,
                     "p50_ms": m["p50_ms"], "p95_ms": m["p95_ms"], "errors": m["errors"]})
        shutil.rmtree(folder / "docs")
    (workdir / "results.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    written = _plot_scale(rows, plot)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores; corpora from {squad_file.name} (+ the extra file beside it);"
        f" /ask through `rag serve`, one request at a time, {requests} requests after 3 warm-up",
        "| passages | of them distinct | documents | index build (s) | passages/s | `rag index` wall (s) | index on disk (MiB) | "
        "`rag index` peak memory (MiB) | /ask p50 (ms) | /ask p95 (ms) | errors | server peak memory (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {r['passages']:,} | {r['distinct_passages']:,} | {r['documents']:,} | {r['build_seconds']:.1f} | {r['passages_per_second']:.1f} | "
          f"{r['index_wall_seconds']:.1f} | {r['index_mib']:.1f} | {r['index_peak_mib']:.0f} | {r['p50_ms']:.0f} | "
          f"{r['p95_ms']:.0f} | {r['errors']} | {r['server_peak_mib']:.0f} |" for r in rows],
        written,
    ]
    return "\n".join(lines)


NO_MATPLOTLIB = "plot skipped: matplotlib is not installed (pip install -e \".[bench]\")"


def _pyplot():
    """matplotlib.pyplot drawing to files only, or None when matplotlib (the `bench` extra) is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _plot_scale(rows: list[dict], path: Path) -> str:
    """Build time and /ask latency against corpus size, log-log, as a PNG; the line saying where."""
    plt = _pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    n = [r["passages"] for r in rows]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(12, 3.6))
    a.plot(n, [r["build_seconds"] for r in rows], "o-")
    a.set(xscale="log", yscale="log", xlabel="passages", ylabel="seconds", title="index build")
    b.plot(n, [r["p50_ms"] for r in rows], "o-", label="p50")
    b.plot(n, [r["p95_ms"] for r in rows], "s--", label="p95")
    b.set(xscale="log", xlabel="passages", ylabel="ms", title="/ask latency")
    b.set_ylim(bottom=0)  # from zero: a flat line should look flat
    b.legend()
    c.plot(n, [r["server_peak_mib"] for r in rows], "o-", label="server")
    c.plot(n, [r["index_mib"] for r in rows], "s--", label="index on disk")
    c.set(xscale="log", xlabel="passages", ylabel="MiB", title="memory and disk")
    c.legend()
    for ax in (a, b, c):
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path}"


def run_learning_curve(squad_file: Path, readers: list[tuple[str, Path]], plot: Path,
                       questions_file: Path | None = None) -> str:
    """Cumulative training's learning curve: for each reader version, the training windows its lineage saw
    against its dev F1s (from its reader_meta.json), its hand-written seed-set F1 and its SQuAD test-article
    F1 (both evaluated here, open-domain, at its own threshold), with the wrong answers (answers given with
    F1 < 50) of each. Table and plot (to `plot`); the seed set is `questions_file` (default the repository's
    eval/qa.jsonl)."""
    from rag.config import Settings
    from rag.offline.evaluation import load_qa, run_items, squad_items
    from rag.offline.squad import is_right, squad_corpus
    from rag.offline.training import lineage_of, lineage_totals
    from rag.pipeline.qa import Pipeline
    from rag.reader.folder import load_reader_meta
    from rag.reader.model import Reader
    from rag.store.embedding import Embedder
    from rag.store.files.index import memory_index, open_index

    settings = Settings()
    embedder = Embedder.from_settings(settings)
    seed_index = open_index(settings, embedder)
    questions, pairs = squad_items(squad_file, None, "test")
    test_index = memory_index(squad_corpus(questions), embedder, settings)
    qa_file = questions_file or QUESTIONS_FILE
    items, test_items = load_qa(qa_file), [item for _, item in pairs]
    rows, previous = [], []
    for label, folder in readers:
        meta = load_reader_meta(folder)
        runs = lineage_of(folder)
        if "lineage" not in meta and previous:
            # a reader from before lineages were recorded names its base by a path that may hold a later
            # reader now (v3's "rag/models/reader"): its base is the version listed before it
            runs = previous + runs[-1:]
        previous = runs
        totals = lineage_totals(runs)
        settings_r = settings.with_overrides(reader_model=str(folder))
        reader = Reader.from_settings(settings_r)  # loaded once, read by both pipelines
        seeds = run_items(Pipeline.from_settings(settings_r, index=seed_index, embedder=embedder, reader=reader), items,
                          name=f"{label} seeds")
        test = run_items(Pipeline.from_settings(settings_r, index=test_index, embedder=embedder, reader=reader),
                         test_items, name=f"{label} test")
        wrong = lambda report: sum(r.prediction is not None and not is_right(r.f1) for r in report.rows)  # noqa: E731
        rows.append({"version": label, "folder": str(folder), "windows_seen": totals["windows_seen"], "steps": totals["steps"],
                     "dev_gold_forced_f1": meta.get("dev_gold_paragraph", {}).get("forced_answer", {}).get("f1"),
                     "dev_open_f1": meta.get("calibration_report", {}).get("open_domain", {}).get("at_threshold", {}).get("f1"),
                     "threshold": meta.get("calibration", {}).get("threshold"),
                     "seed_f1": seeds.metrics["f1"], "seed_wrong": wrong(seeds),
                     "test_f1": test.metrics["f1"], "test_wrong": wrong(test)})
    fmt = lambda x: "–" if x is None else f"{x:.1f}"  # noqa: E731
    lines = [
        f"seed set: {_shown(qa_file)} ({len(items)} questions); test: the {len(test_items)} questions of the test articles of"
        f" {squad_file.name}, open-domain over their paragraphs; each reader at its own calibrated threshold",
        "| version | windows seen | steps | dev gold ¶ forced F1 | dev open-domain F1 (threshold) | seed F1 | seed wrong answers "
        "| test F1 | test wrong answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {r['version']} | {r['windows_seen']:,} | {r['steps']:,} | {fmt(r['dev_gold_forced_f1'])} | "
          f"{fmt(r['dev_open_f1'])} ({r['threshold']}) | {fmt(r['seed_f1'])} | {r['seed_wrong']} | {fmt(r['test_f1'])} | "
          f"{r['test_wrong']} |" for r in rows],
    ]
    plt = _pyplot()
    if plt is None:
        return "\n".join([*lines, NO_MATPLOTLIB])
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    x = [r["windows_seen"] for r in rows]
    for key, name, style in (("dev_gold_forced_f1", "dev, gold paragraph, forced", "o-"),
                             ("dev_open_f1", "dev, open-domain, at threshold", "s-"),
                             ("seed_f1", "hand-written seed set", "^-"), ("test_f1", "SQuAD test articles", "d-")):
        ax.plot(x, [r[key] for r in rows], style, label=name)
    for r in rows:
        ax.annotate(r["version"], (r["windows_seen"], r["dev_gold_forced_f1"] or 0), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=8)
    ax.set(xlabel="training windows seen (cumulative, all runs of the lineage)", ylabel="F1",
           title="reader: cumulative CPU training")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=110)
    plt.close(fig)
    lines.append(f"plot: {plot}")
    return "\n".join(lines)
