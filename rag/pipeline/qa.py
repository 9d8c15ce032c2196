"""The answering pipeline: retrieve passages, read them all in one batch, score spans globally,
merge duplicate answers, then answer with citations or abstain (DrQA's thin pipeline)."""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.config import Settings
from rag.errors import TopKError
from rag.ingest.chunking import sentence_spans, sentences_around
from rag.ingest.files import CorpusError
from rag.pipeline.calibration import Calibrator, answer_features, uncalibrated_probability
from rag.pipeline.models import _SHARED_LOCK, FairLock, shared_models
from rag.pipeline.retrieval import Retriever
from rag.reader.decode import ContextReading
from rag.reader.model import Reader
from rag.records import Answer, Citation, Document, Passage
from rag.store import index_store
from rag.store.embedding import Embedder
from rag.store.files.index import SearchIndex, cached_index_dir, memory_documents, memory_index, needs_indexing
from rag.text import checked_question, normalize_answer


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
                 fallback_threshold: float = Settings.fallback_threshold, calibrated: bool = True,
                 max_question_chars: int = Settings.max_question_chars, max_top_k: int = Settings.max_top_k,
                 lock: FairLock | threading.Lock | None = None) -> None:
        self.retriever = retriever
        self.max_question_chars = max_question_chars
        self.max_top_k = max_top_k
        self.calibrated = calibrated  # False: ignore the reader's stored calibration (while refitting it)
        self.fallback_threshold = fallback_threshold
        self.reader = reader
        self.documents = documents
        self.calibrator: Calibrator | None = None
        self._sentences: dict[str, tuple[str, list[tuple[int, int]]]] = {}
        self.lock = lock or FairLock()  # pipelines that share models share their lock too
        self._warm = False

    @classmethod
    def from_settings(cls, settings: Settings, rebuild: bool = True, index: SearchIndex | None = None,
                      embedder: Embedder | None = None, reader: Reader | None = None,
                      calibrated: bool = True, lock: FairLock | threading.Lock | None = None) -> Pipeline:
        """Wire the stages from settings, reusing any stage given (an embedder or index already loaded, a
        reader in memory), so each model is loaded once per process; then warm everything up."""
        retriever = Retriever.open(settings, embedder=embedder, index=index, rebuild=rebuild)
        pipeline = cls(retriever, reader or Reader.from_settings(settings), retriever.store.documents,
                       fallback_threshold=settings.fallback_threshold, calibrated=calibrated,
                       max_question_chars=settings.max_question_chars, max_top_k=settings.max_top_k, lock=lock)
        pipeline.warm_up()
        return pipeline

    @classmethod
    def from_folder(cls, docs: str | os.PathLike, index: str | os.PathLike | None = None, **settings: object) -> Pipeline:
        """Answer from the documents of a folder: its index is built, or brought up to date (added, changed
        and removed files), then the models load. Any Settings field is a keyword (`top_k=3`,
        `store="postgresql://…"`). Without `index`, the index is kept in the cache folder ($RAG_CACHE, else
        ~/.cache/rag/indexes/), keyed by the folder's absolute path: nothing is written where the script runs."""
        folder = Path(docs)
        if not folder.is_dir():
            raise CorpusError(f"corpus folder not found: {folder}")
        s = Settings.of(**settings, docs_dir=folder, index_dir=Path(index) if index is not None else cached_index_dir(folder))
        embedder, reader = shared_models(s)
        with _SHARED_LOCK:  # the shared embedder's tokenizer is not for two threads at once
            if s.store or needs_indexing(s):
                index_store(s, embedder, progress=False)
        return cls.from_settings(s, rebuild=False, embedder=embedder, reader=reader, lock=_SHARED_LOCK)

    @classmethod
    def from_documents(cls, documents: Iterable[Document | str], **settings: object) -> Pipeline:
        """Answer from documents held in memory (a `str` becomes `Document("doc-N.txt", text)`): indexed in
        memory, nothing written to disk. Any Settings field is a keyword, as for from_folder."""
        docs = memory_documents(documents)
        s = Settings.of(**settings)
        embedder, reader = shared_models(s)
        with _SHARED_LOCK:
            index = memory_index(docs, embedder, s)
        return cls.from_settings(s, index=index, embedder=embedder, reader=reader, lock=_SHARED_LOCK)

    @property
    def store(self):
        """The index store answers come from (rag.store.base.Store: counts, documents, its folder)."""
        return self.retriever.store

    @property
    def embedder(self) -> Embedder:
        """The embedder retrieval runs (shared by every pipeline of the process for the same settings)."""
        return self.retriever.embedder

    def ask(self, question: str, top_k: int | None = None, sources: list[str] | None = None) -> Answer:
        """The answer to `question` from the documents (only those `sources` names or glob patterns match,
        when given), with citations, or an abstention (`answer` None)."""
        return self.run(question, top_k, sources=sources)

    def search(self, question: str, top_k: int | None = None, sources: list[str] | None = None) -> list[Passage]:
        """The passages retrieval finds for `question`, best first (nothing is read)."""
        question = self.check(question, top_k)
        with self.lock, self.retriever.store.snapshot():
            names = None if sources is None else self.retriever.store.sources_matching(sources)
            return self.retriever.run(question, top_k, names)

    def check(self, question: object, top_k: int | None = None) -> str:
        """The question as it will be answered (control characters out, white space collapsed), or a
        QuestionError saying why it cannot be asked: not text, empty, or over the settings' limits."""
        cleaned = checked_question(question, self.max_question_chars)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= self.max_top_k):
            raise TopKError(f"must be a whole number between 1 and {self.max_top_k}, not {top_k!r}")
        return cleaned

    def close(self) -> None:
        """Release the store's connections (a PostgreSQL pool); the models stay loaded until garbage."""
        self.retriever.store.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        with self.lock:
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
            "reader_runtime_why": (self.reader.runtime_choice.why if self.reader.runtime_choice is not None
                                   else "measure_runtime is off: the fp32 ONNX export when there is one (fast start)"
                                   if self.reader.backend == "auto" else f"--reader-backend {self.reader.backend}"),
            "retrieval_mode": self.retriever.mode,
            "no_answer_threshold": self.threshold,
            "calibrated": self.calibrator is not None,
        }

    def run(self, question: str, top_k: int | None = None, timings: dict[str, float] | None = None,
            sources: list[str] | None = None) -> Answer:
        """Answer `question` from the top_k retrieved passages, or abstain. The question is cleaned as the API
        cleans it (control characters out, white space collapsed); an empty one is a QuestionError. With
        `timings`, the seconds of each stage are set in it: "retrieve", "read" (tokenize, forward pass, span
        search), "forward" (the forward passes alone) and "calibrate + cite" (the stage profile, /metrics). With `sources` (document names or
        glob patterns), only passages of the matching documents are retrieved."""
        question = self.check(question, top_k)
        with self.lock:
            self.warm_up()
            self.reader.check_question(question)  # before any work: a too-long question is refused, not cut
            with self.retriever.store.snapshot():  # passages and cited documents from one state of the store
                started = time.perf_counter()
                names = None if sources is None else self.retriever.store.sources_matching(sources)
                passages = self.retriever.run(question, top_k, names)
                if timings is not None:
                    timings["retrieve"] = time.perf_counter() - started
                return self._answer(question, passages, timings=timings)

    def answer_from(self, question: str, passages: list[Passage], readings: list[ContextReading] | None = None) -> Answer:
        """Answer from given passages (the retrieved ones, or a gold paragraph in evaluation), and from
        the reader's readings of them when already made (the stage profile times the reading apart)."""
        with self.lock:
            return self._answer(question, passages, readings)

    def _answer(self, question: str, passages: list[Passage], readings: list[ContextReading] | None = None,
                timings: dict[str, float] | None = None) -> Answer:
        started = time.perf_counter()
        judgement = self.judge(question, passages, readings, timings)
        best = judgement.best
        score, calibrated = round(judgement.probability, 4), self.calibrator is not None
        if best is None or judgement.probability < self.threshold:
            answer = Answer(question, None, score, [], passages, calibrated)
        else:
            answer = Answer(question, best.text, score, self._citations(best, passages), passages, calibrated)
        if timings is not None:
            timings["calibrate + cite"] = time.perf_counter() - started - timings["read"]
        return answer

    def judge(self, question: str, passages: list[Passage], readings: list[ContextReading] | None = None,
              timings: dict[str, float] | None = None) -> Judgement:
        """Read all passages in one batch (unless their readings are given) and score the best answer's
        chance of being right; with `timings`, the seconds spent reading are set in timings["read"]."""
        self.warm_up()
        if timings is not None:
            timings["read"] = 0.0  # unless read below
        if not passages:
            return Judgement(None, None, 0.0)
        if readings is None:
            started = time.perf_counter()
            readings = self.reader.run(question, [p.chunk.text for p in passages])
            if timings is not None:
                timings["read"] = time.perf_counter() - started
                timings["forward"] = self.reader.last_forward_seconds
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
                                      page=document.page_at(start), heading=document.heading_at(start),
                                      ocr=document.read_by_ocr(start)))
        return citations

    def _quote(self, document: Document, start: int, end: int) -> tuple[str, int]:
        """The sentence(s) of the document that contain [start, end), and where they start."""
        text = document.text
        cached = self._sentences.get(document.source)
        if cached is None or cached[0] is not text and cached[0] != text:  # a shared store's document can change
            cached = self._sentences[document.source] = (text, sentence_spans(text))
        quote_start, quote_end = sentences_around(cached[1], start, end)
        return text[quote_start:quote_end], quote_start
