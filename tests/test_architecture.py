"""How the code is wired: each model loads once per process, imports go one way, and the pipeline's
answer merging and citation rules on hand-made reader outputs."""
import ast
import json
from pathlib import Path

import pytest

from rag.pipeline.qa import Candidate, Pipeline, merge_candidates
from rag.reader.decode import ContextReading, Span
from rag.records import Chunk, Document, Passage

from helpers import REPO
from helpers.squad import squad_file


@pytest.fixture()
def load_counts(monkeypatch, tmp_path):
    """Counts of SentenceTransformer and QA-model loads made while the test runs (through torch: the ONNX
    export cache is pointed at an empty folder)."""
    import sentence_transformers

    monkeypatch.setenv("RAG_CACHE", str(tmp_path / "empty-cache"))
    from transformers import AutoModelForQuestionAnswering

    counts = {"embedder": 0, "reader": 0}
    real_init = sentence_transformers.SentenceTransformer.__init__
    real_load = AutoModelForQuestionAnswering.from_pretrained.__func__

    def counting_init(self, *args, **kwargs):
        counts["embedder"] += 1
        real_init(self, *args, **kwargs)

    def counting_load(cls, *args, **kwargs):
        counts["reader"] += 1
        return real_load(cls, *args, **kwargs)

    monkeypatch.setattr(sentence_transformers.SentenceTransformer, "__init__", counting_init)
    monkeypatch.setattr(AutoModelForQuestionAnswering, "from_pretrained", classmethod(counting_load))
    return counts


@pytest.fixture(scope="module")
def small_squad(tmp_path_factory):
    root = tmp_path_factory.mktemp("squad")
    normans = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, "
               "a region in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway.")
    solar = "Solar energy is radiant light and heat from the Sun that is harnessed using a range of technologies."
    lighthouse = "The Fastnet Rock lighthouse was designed by William Douglass and completed in 1904 off Ireland."
    return squad_file(root / "small.json", {
        "Lighthouse": [(lighthouse, [("Who designed the lighthouse?", "William Douglass"),
                                     ("When was it completed?", "1904"), ("Who painted it?", None)]),
                       ("The lighthouse keepers left the rock in 1989, when the light was automated.",
                        [("When did the keepers leave the rock?", "1989")])],
        "Normans": [(normans, [("What region is named after the Normans?", "Normandy"),
                               ("Where were the Norse raiders from?", "Denmark, Iceland and Norway"),
                               ("Who ate the bread of the Normans?", None)])],
        "Solar_energy": [(solar, [("Where does solar energy come from?", "the Sun"),
                                  ("What is the price of solar panels in Peru?", None)])],
    })


def test_eval_squad_loads_each_model_once(small_squad, settings, load_counts):
    from rag.offline.evaluation import evaluate_squad

    report = evaluate_squad(settings, small_squad, split="dev")
    assert report.metrics["n"] == 5
    assert load_counts == {"embedder": 1, "reader": 1}


def test_serve_loads_each_model_once(settings, load_counts):
    from fastapi.testclient import TestClient

    from rag.service.server import create_app

    with TestClient(create_app(settings, rebuild=False)) as client:
        assert client.get("/health").json()["documents"] == 5
        client.post("/ask", json={"question": "Who did Anthropic hire to lead its infrastructure effort?"})
    assert load_counts == {"embedder": 1, "reader": 1}


@pytest.mark.slow
def test_train_reader_with_negatives_and_calibration_loads_each_model_once(small_squad, tmp_path, load_counts):
    """The whole `rag train-reader` command: retriever negatives, training from the shipped reader, the dev
    evaluation and the calibration share one embedder and one QA model."""
    from rag.cli import main

    out = tmp_path / "reader"
    code = main(["train-reader", "--train", str(small_squad), "--output", str(out), "--init",
                 "--negative-fraction", "1.0", "--extra-questions", "0", "--epochs", "1", "--batch-size", "2",
                 "--max-length", "96", "--stride", "32", "--learning-rate", "1e-6", "--threads", "1"])
    assert code == 0
    assert load_counts == {"embedder": 1, "reader": 1}
    meta = json.loads((out / "reader_meta.json").read_text())
    assert meta["data"]["mix"]["squad-negative"] >= 1 and "calibration" in meta
    assert meta["lineage"][-1]["dev"]["open_domain_f1_at_threshold"] >= 0


def _imports(path: Path) -> set[str]:
    """Every rag module or name `path` imports, at the top or inside a function (a lazy import is still a
    dependency), relative imports resolved."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def _import_graph() -> dict[str, set[str]]:
    """rag's modules (dotted names) -> the rag modules each imports, from the source."""
    package = REPO / "rag"
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


#: Which packages of rag each may import (besides the shared modules at its top: errors, config, records,
#: text, console): data flows one way, down this list.
MAY_IMPORT = {
    "(shared)": set(),
    "runtime": set(),
    "ingest": set(),
    "reader": {"runtime"},
    "store": {"ingest", "runtime"},
    "pipeline": {"ingest", "runtime", "reader", "store"},
    "service": {"ingest", "runtime", "reader", "store", "pipeline"},
    "offline": {"ingest", "runtime", "reader", "store", "pipeline"},
    "cli": {"ingest", "runtime", "reader", "store", "pipeline", "service", "offline"},
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (REPO / "rag" / parts[1]).is_dir()) else "(shared)"


def test_imports_go_one_way():
    """Each package imports only the packages below it (serving never imports the offline tools, stores
    never the service, the shared modules nothing of the stages), and errors.py imports nothing of rag."""
    graph = _import_graph()
    assert set(map(_package, graph)) == set(MAY_IMPORT), "a new package needs its place in MAY_IMPORT"
    wrong = sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps
                   if _package(d) not in MAY_IMPORT[_package(m)] | {_package(m), "(shared)"})
    assert not wrong, wrong
    assert not graph["rag.errors"]


def test_no_import_circles():
    """No module of rag imports, through any chain of imports, a module that imports it back."""
    graph, state, circles = _import_graph(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                circles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, circles


def test_modules_are_small_enough_to_read_at_one_sitting():
    """No module outside offline/ is over 400 lines."""
    long = {str(p.relative_to(REPO)): n for p in (REPO / "rag").rglob("*.py")
            if "offline" not in p.parts and (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, long


def test_the_reader_is_made_from_the_settings_in_one_mapping():
    """SETTINGS_TO_READER names every Reader argument once, each from a Settings field, so a reader setting
    cannot be missed by from_settings or by the key under which pipelines share a reader."""
    import dataclasses
    import inspect

    from rag.config import Settings
    from rag.reader.model import SETTINGS_TO_READER, Reader, reader_key

    arguments = set(inspect.signature(Reader).parameters)
    assert sorted(SETTINGS_TO_READER.values()) == sorted(arguments)
    assert set(SETTINGS_TO_READER) <= {f.name for f in dataclasses.fields(Settings)}
    base = Settings()
    for field in SETTINGS_TO_READER:  # each setting changes the key
        value = getattr(base, field)
        other = ("torch" if field == "reader_backend" else
                 {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v + 1, str: lambda v: v + "x"}[type(value)](value))
        assert reader_key(dataclasses.replace(base, **{field: other})) != reader_key(base), field


def _reading(*spans, null=0.0):
    return ContextReading([Span(0, s, e, t, score, null) for s, e, t, score in spans], null)


def test_merge_candidates_groups_equal_answers_best_first():
    readings = [
        _reading((10, 19, "Eric Boyd", 9.0), (0, 5, "Boyd.", 4.0)),
        _reading((3, 12, "eric boyd", 11.0), (20, 24, "2026", 7.5)),
        _reading((0, 1, ",", 12.0)),  # normalises to nothing: never an answer
    ]
    candidates = merge_candidates(readings)
    assert [c.key for c in candidates] == ["eric boyd", "2026", "boyd"]
    eric = candidates[0]
    assert eric.text == "eric boyd" and eric.score == 11.0  # the best-scored spelling wins
    assert eric.places == [(1, 3, 12), (0, 10, 19)]  # best place first
    assert sorted(eric.span_scores) == [9.0, 11.0]


def test_citations_skip_places_that_overlap_one_already_cited():
    text = "In May 2026 they hired Eric Boyd, who led Azure. Later, Eric Boyd spoke."
    doc = Document("a.txt", text)
    first = text.index("Eric Boyd")
    second = text.index("Eric Boyd", first + 1)
    chunk_a = Chunk("a.txt", 0, 48, text[0:48])
    chunk_b = Chunk("a.txt", 12, len(text), text[12:])  # overlaps chunk_a
    passages = [Passage(chunk_a, 1.0, 0), Passage(chunk_b, 0.5, 1)]
    best = Candidate("Eric Boyd", "eric boyd", 9.0, places=[
        (0, first, first + 9),  # the first mention, through chunk_a
        (1, first - 12, first - 12 + 9),  # the same mention through the overlapping chunk: left out
        (1, first - 12, first - 12 + 10),  # "Eric Boyd," overlapping it: left out (and not the answer's text)
        (1, second - 12, second - 12 + 9),  # the second mention: cited
    ])
    pipeline = Pipeline(None, None, {"a.txt": doc})
    citations = pipeline._citations(best, passages)
    assert [(c.start, c.end) for c in citations] == [(first, first + 9), (second, second + 9)]
    for c in citations:
        assert text[c.start : c.end] == "Eric Boyd"
        assert text[c.quote_start : c.quote_start + len(c.quote)] == c.quote
    assert citations[0].quote == "In May 2026 they hired Eric Boyd, who led Azure."
