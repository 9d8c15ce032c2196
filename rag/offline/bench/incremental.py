"""`rag bench incremental`: a full and an incremental `rag index` of a corpus with one file changed."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


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
