"""What the benchmarks share: a real `rag serve` in a child process, HTTP calls, load at a concurrency, peak memory, the seed questions, SQuAD passage corpora, matplotlib when installed."""
from __future__ import annotations

import json
import os
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
    """`rag serve` in a child process; returns once /health answers with every collection open (or raises,
    having stopped it)."""
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
            status, health = http_json("GET", f"http://127.0.0.1:{port}/health", timeout=2)
            if status == 200 and (health or {}).get("status") != "loading":
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


def shown(path: Path) -> Path:
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


def run_measured(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run a command to its end, its output in `log`; its wall seconds and peak resident memory (MiB)."""
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {log.read_text(encoding='utf-8')[-2000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


NO_MATPLOTLIB = "plot skipped: matplotlib is not installed (pip install -e \".[bench]\")"


def pyplot():
    """matplotlib.pyplot drawing to files only, or None when matplotlib (the `bench` extra) is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
