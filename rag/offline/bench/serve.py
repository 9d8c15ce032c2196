"""`rag bench serve`: the real server's /ask latency and throughput at several concurrency levels over the seed questions (once per --workers count), and its peak memory."""
from __future__ import annotations

import os
import platform
from pathlib import Path

from rag.offline.bench.harness import free_port, load_questions, measure, peak_rss_mib, process_tree, start_server, stop_server


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
