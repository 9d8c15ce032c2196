"""Offline evaluation (`rag eval`): the hand-written set over the corpus, or a SQuAD 2.0 file open-domain,
through the same pipeline as `rag ask`; metrics in percent, a table, and a Markdown report of the misses."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError, field_validator
from tqdm import tqdm

from rag.config import Settings
from rag.errors import RagError
from rag.offline.squad import (
    DEV_TITLES,
    TEST_TITLES,
    gold_passage,
    load_squad,
    normalize_answer,
    score_prediction,
    squad2_scores,
    squad_corpus,
)
from rag.pipeline.qa import Pipeline
from rag.text import clean_question

log = logging.getLogger(__name__)


class EvalError(RagError):
    """A malformed evaluation file; the message names the line."""


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    answers: list[str]  # empty: the corpus cannot answer it
    sources: list[str]
    kind: str = ""  # optional: what kind of evidence answers it (scan, html-table, pdf-table): reported apart


@dataclass
class Row:
    """One question's outcome."""

    item: QAItem
    prediction: str | None
    score: float
    cited: str | None
    retrieved: list[str]
    em: float
    f1: float
    seconds: float
    gold_f1: float | None = None


@dataclass
class EvalReport:
    name: str
    metrics: dict
    rows: list[Row] = field(default_factory=list)


class QARecord(BaseModel):
    """One line of a hand-written set, checked strictly: a question that is not a string, or is empty after
    cleaning, is refused with its line number instead of failing mid-evaluation."""

    model_config = ConfigDict(extra="ignore")

    id: StrictStr | StrictInt
    question: StrictStr
    answers: list[StrictStr]
    sources: list[StrictStr]
    kind: StrictStr = ""

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        value = clean_question(value)
        if not value:
            raise ValueError("the question is empty")
        return value


def load_qa(path: Path) -> list[QAItem]:
    """The hand-written JSONL set; each line {"id", "question", "answers": [...], "sources": [...]}."""
    items = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise EvalError(f"{path} cannot be read ({getattr(err, 'strerror', None) or err})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = QARecord.model_validate_json(line)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "line"
            message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
            raise EvalError(f"{path}, line {number}: not a valid QA record ({where}: {message})") from None
        items.append(QAItem(str(record.id), record.question, record.answers, record.sources, record.kind))
    if not items:
        raise EvalError(f"{path} holds no questions")
    return items


def warn_unknown_sources(items: list[QAItem], documents) -> None:
    """Say which gold sources the corpus does not hold: those questions cannot be cited right."""
    unknown = sorted({s for item in items for s in item.sources if s not in documents})
    if unknown:
        log.warning("%d gold source%s of the set %s not in the corpus (%s): citation accuracy counts them as misses",
                    len(unknown), "" if len(unknown) == 1 else "s", "is" if len(unknown) == 1 else "are",
                    ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""))


def run_items(pipeline: Pipeline, items: list[QAItem], gold_passages: dict | None = None, name: str = "eval") -> EvalReport:
    """Ask every question; with `gold_passages` (id -> Passage) also read each one in its gold passage alone."""
    rows = []
    for item in tqdm(items, desc=name, unit="question"):
        started = time.perf_counter()
        answer = pipeline.run(item.question)
        seconds = time.perf_counter() - started
        em, f1 = score_prediction(answer.answer, item.answers)
        row = Row(item, answer.answer, answer.score, answer.citations[0].source if answer.citations else None,
                  [p.chunk.source for p in answer.passages], em, f1, seconds)
        if gold_passages is not None:
            gold = pipeline.answer_from(item.question, [gold_passages[item.id]])
            row.gold_f1 = score_prediction(gold.answer, item.answers)[1]
        rows.append(row)
    return EvalReport(name, metrics(rows), rows)


def metrics(rows: list[Row]) -> dict:
    """Percentages (SQuAD 2.0 convention for unanswerable questions) plus counts and latency."""
    has = [r for r in rows if r.item.answers]
    no = [r for r in rows if not r.item.answers]
    answered = [r for r in has if r.prediction is not None]
    pct = lambda xs: round(100.0 * float(np.mean(xs)), 2) if xs else None  # noqa: E731
    latencies = [r.seconds * 1000 for r in rows]
    squad = squad2_scores([(bool(r.item.answers), r.em, r.f1) for r in rows], empty=None)
    out = {
        "n": len(rows),
        "n_answerable": len(has),
        "n_unanswerable": len(no),
        **{k: None if v is None else round(v, 2) for k, v in squad.items()},  # exact_match, f1, has_answer_f1, no_answer_accuracy
        "answered_answerable": pct([r.prediction is not None for r in has]),
        "citation_accuracy": pct([r.cited in r.item.sources for r in answered]),
        "recall_at_k": pct([any(s in r.item.sources for s in r.retrieved) for r in has]),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "latency_p95_ms": round(float(np.percentile(latencies, 95)), 1),
    }
    gold = [r.gold_f1 for r in rows if r.gold_f1 is not None]
    if gold:
        out["reader_f1_gold"] = pct(gold)
    kinds = sorted({r.item.kind for r in rows if r.item.kind})
    for kind in kinds:  # answered right (F1 >= 50, cited in a gold source), per kind of evidence
        mine = [r for r in rows if r.item.kind == kind]
        right = [r.f1 >= 0.5 and (not r.item.sources or r.cited in r.item.sources) for r in mine]
        out[f"{kind}: right (of {len(mine)})"] = pct(right)
        out[f"{kind}: F1"] = pct([r.f1 for r in mine])
    return out


def evaluate_qa_file(settings: Settings, qa_path: Path, rebuild: bool = True) -> EvalReport:
    """The hand-written set over settings.docs_dir."""
    items = load_qa(qa_path)
    pipeline = Pipeline.from_settings(settings, rebuild=rebuild)
    warn_unknown_sources(items, pipeline.documents)
    return run_items(pipeline, items, name=str(qa_path))


def squad_items(path: Path, limit: int | None, split: str) -> tuple[list, list[QAItem]]:
    """(questions, QAItems) of a SQuAD file; `split` keeps only the reader's dev or test articles; `limit`
    takes questions spread evenly (every k-th) over the file."""
    questions = load_squad(path)
    if split != "all":
        titles = DEV_TITLES if split == "dev" else TEST_TITLES
        questions = [q for q in questions if q.title in titles]
    if not questions:
        raise EvalError(f"{path} has no questions in the {split!r} split")
    chosen = questions
    if limit and limit < len(questions):  # evenly spaced from the first question to the last
        last = len(questions) - 1
        chosen = [questions[round(i * last / max(1, limit - 1))] for i in range(limit)]
    items = [QAItem(q.id, q.question, list(q.answers), [f"{q.title}/{q.paragraph}"]) for q in chosen]
    return questions, list(zip(chosen, items))


def evaluate_squad(settings: Settings, path: Path, limit: int | None = None, split: str = "all") -> EvalReport:
    """Open-domain over the file's paragraphs (each a document, built in memory, `index/` untouched)."""
    from rag.store.embedding import Embedder
    from rag.store.files.index import memory_index

    questions, pairs = squad_items(path, limit, split)
    embedder = Embedder.from_settings(settings)
    index = memory_index(squad_corpus(questions), embedder, settings, progress=True)
    pipeline = Pipeline.from_settings(settings, index=index, embedder=embedder)
    gold = {item.id: gold_passage(q) for q, item in pairs}
    report = run_items(pipeline, [item for _, item in pairs], gold, name=f"{path.name} ({split})")
    report.metrics["corpus_documents"] = len(index.documents)
    report.metrics["corpus_passages"] = len(index.chunks)
    return report


def retrieval_report(settings: Settings, qa_path: Path, ks: tuple[int, ...] = (1, 5)) -> dict:
    """Hit rate at each k for dense, BM25 and hybrid retrieval: a hit is a retrieved passage from a gold
    source that contains a gold answer (compared after answer normalisation)."""
    from rag.pipeline.retrieval import Retriever
    from rag.store.embedding import Embedder
    from rag.store.files.index import open_index

    items = [i for i in load_qa(qa_path) if i.answers]
    embedder = Embedder.from_settings(settings)
    index = open_index(settings, embedder)
    report = {"n": len(items), "k": list(ks), "modes": {}}
    for mode in ("dense", "bm25", "hybrid"):  # the table's order, not RETRIEVAL_MODES's
        retriever = Retriever.from_settings(index, embedder, settings, mode=mode, top_k=max(ks))
        hits = {k: 0 for k in ks}
        for item in items:
            passages = retriever.run(item.question)
            found = [p.chunk.source in item.sources and any(normalize_answer(a) in normalize_answer(p.chunk.text) for a in item.answers)
                     for p in passages]
            for k in ks:
                hits[k] += any(found[:k])
        report["modes"][mode] = {f"hit@{k}": round(100.0 * hits[k] / len(items), 1) for k in ks}
    return report


def format_retrieval(report: dict) -> str:
    keys = [f"hit@{k}" for k in report["k"]]
    lines = [f"retrieval over {report['n']} answerable questions", "| mode | " + " | ".join(keys) + " |",
             "|---|" + "---|" * len(keys)]
    lines += [f"| {m} | " + " | ".join(f"{v[k]:.1f}" for k in keys) + " |" for m, v in report["modes"].items()]
    return "\n".join(lines)


_LABELS = {
    "exact_match": "Exact match", "f1": "F1", "has_answer_f1": "HasAns F1", "no_answer_accuracy": "NoAns accuracy",
    "answered_answerable": "Answerable answered", "citation_accuracy": "Citation accuracy", "recall_at_k": "Recall@k",
    "reader_f1_gold": "Reader F1 (gold passage)", "latency_p50_ms": "Latency p50 (ms)", "latency_p95_ms": "Latency p95 (ms)",
    "n": "Questions", "n_answerable": "Answerable", "n_unanswerable": "Unanswerable",
    "corpus_documents": "Corpus documents", "corpus_passages": "Corpus passages",
}


def format_table(report: EvalReport) -> str:
    """The metrics as a Markdown table (readable in a terminal too)."""
    lines = [f"{report.name}", "| metric | value |", "|---|---:|"]
    for key, value in report.metrics.items():
        shown = "–" if value is None else (f"{value:.1f}" if isinstance(value, float) else str(value))
        lines.append(f"| {_LABELS.get(key, key)} | {shown} |")
    return "\n".join(lines)


def write_markdown(report: EvalReport, path: Path) -> None:
    """The table and every miss (question, expected, got, cited source)."""
    misses = [r for r in report.rows if r.f1 < 1.0]
    lines = [f"# Evaluation: {report.name}", "", format_table(report).split("\n", 1)[1], "",
             f"## Misses ({len(misses)} of {len(report.rows)})", "",
             "| id | question | expected | got | score | cited | F1 |", "|---|---|---|---|---:|---|---:|"]
    cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    for r in misses:
        expected = " / ".join(r.item.answers) if r.item.answers else "(no answer)"
        got = r.prediction if r.prediction is not None else "(abstained)"
        lines.append(f"| {cell(r.item.id)} | {cell(r.item.question)} | {cell(expected)} | {cell(got)} | {r.score:.2f} | "
                     f"{cell(r.cited or '–')} | {100 * r.f1:.0f} |")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
