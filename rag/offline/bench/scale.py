"""`rag bench scale`: index build time, size, peak memory and /ask latency against corpus size, with a plot."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from rag.offline.bench.harness import NO_MATPLOTLIB, passage_corpus, pyplot, run_measured, serve_and_measure


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
        wall, peak_index = run_measured([sys.executable, "-m", "rag.cli", "index", "--full", "--docs",
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


def _plot_scale(rows: list[dict], path: Path) -> str:
    """Build time and /ask latency against corpus size, log-log, as a PNG; the line saying where."""
    plt = pyplot()
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
