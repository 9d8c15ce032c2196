"""`rag bench backends`: the reader through torch fp32, ONNX Runtime fp32 and int8, /ask latency, quality and the stage profile."""
from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path

import numpy as np

from rag.offline.bench.harness import QUESTIONS_FILE, load_questions, serve_and_measure, shown

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
        f"time, {requests} requests over {len(questions)} seed questions after 3 warm-up; quality: `rag eval` on {shown(qa_file)}",
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
