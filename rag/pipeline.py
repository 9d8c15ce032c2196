"""The answering pipeline: retrieve passages, read them all in one batch, score spans globally,
merge duplicate answers, then answer with citations or abstain (DrQA's thin pipeline)."""
from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from rag.calibration import Calibrator, answer_features, uncalibrated_probability
from rag.chunking import sentence_spans
from rag.config import Settings
from rag.embedding import Embedder
from rag.errors import QuestionError
from rag.index import SearchIndex
from rag.reader import ContextReading, Reader
from rag.retrieval import Retriever
from rag.text import clean_question, normalize_answer
from rag.types import Answer, Citation, Document, Passage


@dataclass
class Candidate:
    """One answer text, with every place it was found (best first)."""

    text: str
    key: str  # normalised text
    score: float  # best span score
    places: list[tuple[int, int, int]] = field(default_factory=list)  # (passage, start, end) in passage text
    span_scores: list[float] = field(default_factory=list)


@dataclass
class Judgement:
    """The reader's verdict for a question over some passages, before the abstain decision."""

    best: Candidate | None
    features: np.ndarray | None
    probability: float


def merge_candidates(readings: list[ContextReading]) -> list[Candidate]:
    """All spans of all passages grouped by normalised text, ranked by their best raw score."""
    merged: dict[str, Candidate] = {}
    for p, reading in enumerate(readings):
        for span in reading.spans:
            key = normalize_answer(span.text)
            if not key:
                continue
            cand = merged.get(key)
            if cand is None:
                cand = merged[key] = Candidate(span.text, key, span.score)
            if span.score > cand.score:
                cand.text, cand.score = span.text, span.score
                cand.places.insert(0, (p, span.start, span.end))
            else:
                cand.places.append((p, span.start, span.end))
            cand.span_scores.append(span.score)
    return sorted(merged.values(), key=lambda c: -c.score)


class Pipeline:
    """Question in, Answer out; the models and the index are loaded once, in warm_up().

    Calls are serialised by a lock: the fast tokenizers are not safe to share between threads, and on a
    small CPU two concurrent forward passes are no faster than one after the other."""

    def __init__(self, retriever: Retriever, reader: Reader, documents: Mapping[str, Document],
                 fallback_threshold: float = Settings.fallback_threshold, calibrated: bool = True) -> None:
        self.retriever = retriever
        self.calibrated = calibrated  # False: ignore the reader's stored calibration (while refitting it)
        self.fallback_threshold = fallback_threshold
        self.reader = reader
        self.documents = documents
        self.calibrator: Calibrator | None = None
        self._sentences: dict[str, tuple[str, list[tuple[int, int]]]] = {}
        self._lock = threading.Lock()
        self._warm = False

    @classmethod
    def from_settings(cls, settings: Settings, rebuild: bool = True, index: SearchIndex | None = None,
                      embedder: Embedder | None = None, reader: Reader | None = None,
                      calibrated: bool = True) -> Pipeline:
        """Wire the stages from settings, reusing any stage given (an embedder or index already loaded, a
        reader in memory), so each model is loaded once per process; then warm everything up."""
        retriever = Retriever.open(settings, embedder=embedder, index=index, rebuild=rebuild)
        pipeline = cls(retriever, reader or Reader.from_settings(settings), retriever.store.documents,
                       settings.fallback_threshold, calibrated)
        pipeline.warm_up()
        return pipeline

    def warm_up(self) -> None:
        if self._warm:
            return
        self.retriever.embedder.warm_up()
        self.reader.warm_up()
        self.calibrator = Calibrator.from_meta(self.reader.meta) if self.calibrated else None
        self._warm = True

    def refresh(self) -> bool:
        """Take up an index rebuilt by another process, between questions (never mid-question); True when
        the store reloaded."""
        with self._lock:
            if not self.retriever.store.refresh():
                return False
            self.documents = self.retriever.store.documents
            self._sentences.clear()
            return True

    @property
    def threshold(self) -> float:
        return self.calibrator.threshold if self.calibrator else self.fallback_threshold

    def describe(self) -> dict:
        """What /health reports about the loaded pipeline."""
        documents, passages = self.retriever.store.counts()
        return {
            "documents": documents,
            "passages": passages,
            "store": self.retriever.store.describe(),
            "embedding_model": self.retriever.embedder.model_name,
            "embedding_runtime": self.retriever.embedder.runtime,
            "reader_model": self.reader.model_name,
            "reader_runtime": self.reader.runtime,
            "retrieval_mode": self.retriever.mode,
            "no_answer_threshold": self.threshold,
            "calibrated": self.calibrator is not None,
        }

    def run(self, question: str, top_k: int | None = None) -> Answer:
        """Answer `question` from the top_k retrieved passages, or abstain. The question is cleaned as the API
        cleans it (control characters out, white space collapsed); an empty one is a QuestionError."""
        if not isinstance(question, str):
            raise QuestionError(f"the question must be text, not {type(question).__name__}")
        question = clean_question(question)
        if not question:
            raise QuestionError("the question is empty")
        with self._lock:
            self.warm_up()
            self.reader.check_question(question)  # before any work: a too-long question is refused, not cut
            with self.retriever.store.snapshot():  # passages and cited documents from one state of the store
                passages = self.retriever.run(question, top_k)
                return self._answer(question, passages)

    def answer_from(self, question: str, passages: list[Passage], readings: list[ContextReading] | None = None) -> Answer:
        """Answer from given passages (the retrieved ones, or a gold paragraph in evaluation), and from
        the reader's readings of them when already made (the stage profile times the reading apart)."""
        with self._lock:
            return self._answer(question, passages, readings)

    def _answer(self, question: str, passages: list[Passage], readings: list[ContextReading] | None = None) -> Answer:
        judgement = self.judge(question, passages, readings)
        best = judgement.best
        score, calibrated = round(judgement.probability, 4), self.calibrator is not None
        if best is None or judgement.probability < self.threshold:
            return Answer(question, None, score, [], passages, calibrated)
        return Answer(question, best.text, score, self._citations(best, passages), passages, calibrated)

    def judge(self, question: str, passages: list[Passage], readings: list[ContextReading] | None = None) -> Judgement:
        """Read all passages in one batch (unless their readings are given) and score the best answer's
        chance of being right."""
        self.warm_up()
        if not passages:
            return Judgement(None, None, 0.0)
        if readings is None:
            readings = self.reader.run(question, [p.chunk.text for p in passages])
        candidates = merge_candidates(readings)
        if not candidates:
            return Judgement(None, None, 0.0)
        features = answer_features(candidates[0], candidates, readings, passages)
        if self.calibrator:
            probability = float(self.calibrator.probability(features)[0])
        else:
            probability = float(uncalibrated_probability(features, self.reader.meta.get("null_margin", 0.0))[0])
        return Judgement(candidates[0], features, probability)

    def _citations(self, best: Candidate, passages: list[Passage]) -> list[Citation]:
        """Where the answer's exact words stand, in document offsets, best place first; a place that
        overlaps one already cited (overlapping chunks, or "Eric Boyd," beside "Eric Boyd") is left out."""
        cited: list[tuple[str, int, int]] = []
        for p, start, end in best.places:
            chunk = passages[p].chunk
            place = (chunk.source, chunk.start + start, chunk.start + end)
            if chunk.text[start:end] != best.text:
                continue
            if any(s == place[0] and place[1] < e and b < place[2] for s, b, e in cited):
                continue
            cited.append(place)
        citations = []
        for source, start, end in cited:
            document = self.documents[source]
            citations.append(Citation(source, start, end, *self._quote(document, start, end),
                                      page=document.page_at(start), heading=document.heading_at(start)))
        return citations

    def _quote(self, document: Document, start: int, end: int) -> tuple[str, int]:
        """The sentence(s) of the document that contain [start, end), and where they start."""
        text = document.text
        cached = self._sentences.get(document.source)
        if cached is None or cached[0] is not text and cached[0] != text:  # a shared store's document can change
            cached = self._sentences[document.source] = (text, sentence_spans(text))
        spans = cached[1]
        ends = [e for _, e in spans]
        first = min(bisect.bisect_right(ends, start), len(spans) - 1)
        last = min(bisect.bisect_left(ends, end), len(spans) - 1)
        quote_start = min(spans[first][0], start)
        return text[quote_start : max(spans[last][1], end)], quote_start
