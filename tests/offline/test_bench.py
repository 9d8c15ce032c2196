"""The benchmarks' own pieces that can be checked cheaply: the corpus the scale and store benchmarks
build, the scale plot, the seed questions, the `rag bench` subcommands and the stage profile."""
import contextlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from rag.cli import build_parser
from rag.offline import bench
from rag.offline.bench import STAGES, passage_corpus, profile_stages
from rag.offline.bench.scale import _plot_scale
from rag.pipeline.qa import Pipeline
from rag.pipeline.retrieval import Retriever
from rag.reader.decode import ContextReading, Span
from rag.reader.model import Reader
from rag.records import Chunk, Document

from helpers import REPO


def squad_file(tmp_path, n_contexts):
    paragraphs = [{"context": f"Paragraph {i} says that the river number {i} is {i * 3} kilometres long. "
                              f"It is not the same river as number {i + 1}.",
                   "qas": [{"id": f"q{i}", "question": f"How long is river {i}?", "is_impossible": False,
                            "answers": [{"text": f"{i * 3} kilometres", "answer_start": 0}]},
                           {"id": f"q{i}b", "question": f"Who named river {i}?", "is_impossible": True, "answers": []}]}
                  for i in range(n_contexts)]
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"data": [{"title": "Rivers", "paragraphs": paragraphs}]}), encoding="utf-8")
    return path


def test_passage_corpus_writes_one_file_per_context_until_the_size(tmp_path):
    count, questions, distinct = passage_corpus(squad_file(tmp_path, 30), 12, tmp_path / "docs", 5)
    files = sorted((tmp_path / "docs").iterdir())
    assert count == distinct == 12 and len(files) == 12  # these short contexts are one passage each
    assert files[0].read_text(encoding="utf-8").startswith("Paragraph 0 says")
    assert questions == [f"How long is river {i}?" for i in range(5)]  # answerable ones only


def test_passage_corpus_refuses_a_file_too_small(tmp_path):
    with pytest.raises(ValueError, match="only 3 passages"):
        passage_corpus(squad_file(tmp_path, 3), 10, tmp_path / "docs", 5)


def test_passage_corpus_repeats_the_contexts_only_when_asked(tmp_path):
    count, questions, distinct = passage_corpus(squad_file(tmp_path, 3), 8, tmp_path / "docs", 5, repeat=True)
    files = sorted(p.name for p in (tmp_path / "docs").iterdir())
    assert (count, distinct) == (8, 3)
    assert files == ["000000-copy1.txt", "000000-copy2.txt", "000000.txt", "000001-copy1.txt", "000001-copy2.txt",
                     "000001.txt", "000002-copy1.txt", "000002.txt"]
    assert (tmp_path / "docs" / "000001-copy2.txt").read_text(encoding="utf-8").startswith("Paragraph 1 says")
    assert questions == [f"How long is river {i}?" for i in range(3)]


def test_scale_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"passages": n, "build_seconds": n / 25, "p50_ms": 200 + n / 1000, "p95_ms": 250 + n / 900,
             "server_peak_mib": 700 + n / 100, "index_mib": n / 300} for n in (1000, 10_000)]
    line = _plot_scale(rows, tmp_path / "scale.png")
    assert line == f"plot: {tmp_path / 'scale.png'}"
    assert (tmp_path / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the seed questions, wherever the command runs -------------------------------------------------------------

def test_questions_default_to_the_repository_set_whatever_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bench.QUESTIONS_FILE.is_absolute() and bench.QUESTIONS_FILE.is_file()
    questions = bench.load_questions()
    assert len(questions) > len(bench.FALLBACK_QUESTIONS) and questions[0].endswith("?")


def test_questions_fall_back_to_the_built_in_ones_only_by_default(tmp_path, monkeypatch):
    from rag.offline.bench import harness

    monkeypatch.setattr(harness, "QUESTIONS_FILE", tmp_path / "absent.jsonl")
    assert bench.load_questions() == bench.FALLBACK_QUESTIONS
    with pytest.raises(FileNotFoundError):
        bench.load_questions(tmp_path / "absent.jsonl")  # a file asked for by name must be there
    given = tmp_path / "qa.jsonl"
    given.write_text('{"question": "Why?"}\n\n{"question": "How?"}\n', encoding="utf-8")
    assert bench.load_questions(given) == ["Why?", "How?"]


# --- `rag bench SUBCOMMAND`: each benchmark with its own arguments -------------------------------------------------

def parse(*argv):
    return build_parser().parse_args(["bench", *argv])


def usage_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_bench_needs_a_subcommand_and_names_them(capsys):
    err = usage_error(capsys)
    assert "{serve,backends,scale,stores,uploads,incremental,curve}" in err.splitlines()[-1]


@pytest.mark.parametrize("argv, message", [
    (["scale"], "required: SQUAD_FILE"),
    (["incremental"], "required: SQUAD_FILE"),
    (["stores", "train.json"], "required: --store"),
    (["curve", "train.json"], "required: --readers"),
    (["serve", "--sizes", "1000"], "unrecognized arguments: --sizes"),  # each has only its own flags
    (["backends", "--docs", "seeds"], "unrecognized arguments: --docs"),
    (["--scale", "train.json"], "invalid choice"),  # the old spelling is gone, not silently plain `rag bench`
])
def test_bench_usage_errors(capsys, argv, message):
    assert message in usage_error(capsys, *argv)


@pytest.fixture
def calls(monkeypatch):
    """Every bench.run_* the command calls, with its arguments, instead of running it."""
    made = []
    for name in ("run_benchmark", "run_backend_benchmark", "run_scale_benchmark", "run_store_benchmark",
                 "run_incremental_benchmark", "run_learning_curve"):
        monkeypatch.setattr(bench, name, lambda *a, _name=name, **k: made.append((_name, a, k)) or f"{_name} report")
    return made


@pytest.mark.parametrize("argv, call", [
    (["serve"], ("run_benchmark", (), {"requests_per_level": 48, "levels": [1, 4, 16], "docs": None, "index": None,
                                       "questions_file": None, "workers": None})),
    (["serve", "--docs", "d", "--index", "i", "--requests", "5", "--concurrency", "1", "2", "--questions", "q.jsonl",
      "--workers", "1", "2"],
     ("run_benchmark", (), {"requests_per_level": 5, "levels": [1, 2], "docs": Path("d"), "index": Path("i"),
                            "questions_file": Path("q.jsonl"), "workers": [1, 2]})),
    (["backends"], ("run_backend_benchmark", (Path("build/backend-bench"), 48), {"questions_file": None})),
    (["scale", "t.json", "--sizes", "10", "20", "--workdir", "w", "--plot", "p.png", "--requests", "3"],
     ("run_scale_benchmark", (Path("t.json"), [10, 20], Path("w"), Path("p.png"), 3), {})),
    (["scale", "t.json"],
     ("run_scale_benchmark", (Path("t.json"), [1000, 10_000, 100_000], Path("build/scale-bench"), Path("docs/scale.png"), 48), {})),
    (["stores", "t.json", "--store", "postgresql://x/y", "--passages", "100"],
     ("run_store_benchmark", ("postgresql://x/y", Path("t.json"), Path("build/store-bench"), 100, 24),
      {"seeds": Path("seeds"), "questions_file": None})),
    (["incremental", "t.json", "--files", "7"], ("run_incremental_benchmark", (Path("t.json"), Path("build/incremental-bench"), 7), {})),
    (["curve", "t.json", "--readers", "v1=a/r1", "b/r2"],
     ("run_learning_curve", (Path("t.json"), [("v1", Path("a/r1")), ("r2", Path("b/r2"))], Path("docs/learning-curve.png")),
      {"questions_file": None})),
])
def test_bench_subcommands_run_their_benchmark(calls, capsys, argv, call):
    args = parse(*argv)
    assert args.func(args) == 0
    assert calls == [call]
    assert capsys.readouterr().out == f"{call[0]} report\n"


# --- the stage profile: timed inside Pipeline.run, not a copy of it -------------------------------------------------

TEXT = "The Nile is 6650 kilometres long. It flows north."


class FakeEmbedder:
    def warm_up(self):
        pass

    def run(self, texts, progress=False):
        return np.ones((len(texts), 4), dtype=np.float32)


class FakeStore:
    documents = {"nile.txt": Document("nile.txt", TEXT)}

    def dense_ranking(self, vector, n, sources=None):
        return [(0, 0.9)]

    def lexical_ranking(self, tokens, n, sources=None):
        return [(0, 3.0)]

    def chunks(self, ids):
        return [Chunk("nile.txt", 0, len(TEXT), TEXT) for _ in ids]

    def snapshot(self):
        return contextlib.nullcontext()


class FakeReader:
    """The real Reader's reading flow (run, read_pairs) over stand-in steps; the forward pass takes 20 ms."""

    run, read_pairs = Reader.run, Reader.read_pairs
    meta: dict = {}
    max_windows = 8
    last_forward_seconds = 0.0

    def warm_up(self):
        pass

    def check_question(self, question):
        pass

    def encode(self, questions, contexts):
        return {"contexts": contexts}

    def kept_windows(self, encoding, max_total=None):
        return list(range(len(encoding["contexts"])))

    def logits(self, encoding, windows):
        time.sleep(0.02)
        return np.zeros((len(windows), 4)), np.zeros((len(windows), 4))

    def readings(self, encoding, windows, start, end, contexts):
        at = TEXT.index("6650 kilometres")
        return [ContextReading([Span(0, at, at + 15, "6650 kilometres", 5.0, -1.0)], -1.0) for _ in contexts]


@pytest.fixture
def pipeline():
    return Pipeline(Retriever(FakeStore(), FakeEmbedder()), FakeReader(), FakeStore.documents, calibrated=False)


def test_pipeline_run_times_its_stages_only_when_asked(pipeline):
    timings = {}
    answer = pipeline.run("How long is the Nile?", timings=timings)
    assert answer.answer == "6650 kilometres" and answer.citations[0].source == "nile.txt"
    assert set(timings) == {"retrieve", "read", "forward", "calibrate + cite"}
    assert timings["read"] >= 0.02 and all(0 <= t < timings["read"] for k, t in timings.items() if k != "read")
    assert pipeline.run("How long is the Nile?") == answer  # without timings: the same answer


def test_profile_stages_reads_the_timings_of_pipeline_run(pipeline):
    reader, embedder = pipeline.reader, pipeline.retriever.embedder
    times = profile_stages(pipeline, ["How long is the Nile?", "Where does the Nile flow?"], rounds=2)
    assert set(times) == {*STAGES, "total"} and all(len(v) == 4 for v in times.values())
    assert min(times["reader forward pass"]) >= 20
    assert all(min(times[s]) >= 0 for s in STAGES)
    assert all(sum(times[s][i] for s in STAGES) <= times["total"][i] for i in range(4))
    # the timed calls are the components' own again afterwards
    assert not {"encode", "kept_windows", "logits", "readings"} & set(vars(reader)) and "run" not in vars(embedder)
    assert "bm25_ranking" not in vars(pipeline.retriever) and "dense_ranking" not in vars(pipeline.retriever.store)


def test_bench_runs_without_httpx():
    """After the README's plain install (no httpx): `rag bench` parses, and its HTTP client (the standard
    library's) talks to a server."""
    code = textwrap.dedent("""
        import http.server, json, sys, threading
        sys.modules["httpx"] = None  # as after the README's plain install: importing it fails
        from rag.offline import bench
        from rag.cli import main

        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"status": "ok"}).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(bench.http_json("GET", f"http://127.0.0.1:{server.server_port}/health"))
        try:
            main(["bench", "curve", "x.json"])
        except SystemExit as exit:
            print("exit", exit.code)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "(200, {'status': 'ok'})" in out.stdout and "exit 2" in out.stdout, out.stderr
    assert "--readers" in out.stderr and "Traceback" not in out.stderr and "httpx" not in out.stderr
