"""The answering pipeline: retrieve passages, read them all in one batch, score spans globally,
merge duplicate answers, then answer with citations or abstain (DrQA's thin pipeline)."""
from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field

import numpy as np

from rag.calibration import Calibrator, softmax_share, uncalibrated_probability
from rag.chunking import sentence_spans
from rag.config import Settings
from rag.reader import ContextReading, Reader
from rag.retrieval import Retriever
from rag.squad import normalize_answer
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


def answer_features(best: Candidate, candidates: list[Candidate], readings: list[ContextReading],
                    passages: list[Passage]) -> np.ndarray:
    """The calibration FEATURES (see rag.calibration) of the best candidate."""
    passage = best.places[0][0]
    nulls = [r.null_score for r in readings]
    everything = [s for c in candidates for s in c.span_scores] + nulls
    top_keys = [normalize_answer(r.spans[0].text) if r.spans else "" for r in readings]
    return np.array([
        best.score,
        best.score - readings[passage].null_score,
        best.score - min(nulls),
        softmax_share(best.span_scores, everything),
        sum(k == best.key for k in top_keys) / len(readings),
        1.0 / (1.0 + passages[passage].rank),
        math.log(1 + len(best.text)),
    ])


class Pipeline:
    """Question in, Answer out; the models and the index are loaded once, in warm_up().

    Calls are serialised by a lock: the fast tokenizers are not safe to share between threads, and on a
    small CPU two concurrent forward passes are no faster than one after the other."""

    def __init__(self, retriever: Retriever, reader: Reader, documents: dict[str, Document]) -> None:
        self.retriever = retriever
        self.reader = reader
        self.documents = documents
        self.calibrator: Calibrator | None = None
        self._sentences: dict[str, list[tuple[int, int]]] = {}
        self._lock = threading.Lock()
        self._warm = False

    @classmethod
    def from_settings(cls, settings: Settings, rebuild: bool = True, index=None) -> "Pipeline":
        """Wire the stages from settings: open (or rebuild) the index, then load both models."""
        from rag.embedding import Embedder
        from rag.index import open_index

        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        embedder = Embedder(settings.embedding_model, settings.embedding_batch_size)
        if index is None:
            index = open_index(settings, embedder, rebuild=rebuild)
        retriever = Retriever.from_settings(index, embedder, settings)
        reader = Reader(settings.reader_model, settings.max_seq_length, settings.doc_stride,
                        settings.max_answer_tokens, settings.n_best, max_question_tokens=settings.max_question_tokens,
                        max_windows_per_context=settings.max_windows_per_passage,
                        max_windows=settings.max_windows_per_question)
        pipeline = cls(retriever, reader, index.documents)
        pipeline.warm_up()
        return pipeline

    def warm_up(self) -> None:
        if self._warm:
            return
        self.retriever.embedder.warm_up()
        self.reader.warm_up()
        self.calibrator = Calibrator.from_meta(self.reader.meta)
        self._warm = True

    @property
    def threshold(self) -> float:
        return self.calibrator.threshold if self.calibrator else 0.5

    def run(self, question: str, top_k: int | None = None) -> Answer:
        """Answer `question` from the top_k retrieved passages, or abstain."""
        with self._lock:
            self.warm_up()
            self.reader.check_question(question)  # before any work: a too-long question is refused, not cut
            passages = self.retriever.run(question, top_k)
            return self._answer(question, passages)

    def answer_from(self, question: str, passages: list[Passage]) -> Answer:
        """Answer from given passages (the retrieved ones, or a gold paragraph in evaluation)."""
        with self._lock:
            return self._answer(question, passages)

    def _answer(self, question: str, passages: list[Passage]) -> Answer:
        judgement = self.judge(question, passages)
        best = judgement.best
        if best is None or judgement.probability < self.threshold:
            return Answer(question, None, round(judgement.probability, 4), [], passages)
        return Answer(question, best.text, round(judgement.probability, 4), self._citations(best, passages), passages)

    def judge(self, question: str, passages: list[Passage]) -> Judgement:
        """Read all passages in one batch and score the best answer's chance of being right."""
        self.warm_up()
        if not passages:
            return Judgement(None, None, 0.0)
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
        return [Citation(source, start, end, self._quote(source, start, end)) for source, start, end in cited]

    def _quote(self, source: str, start: int, end: int) -> str:
        """The sentence(s) of the document that contain [start, end)."""
        text = self.documents[source].text
        spans = self._sentences.get(source)
        if spans is None:
            spans = self._sentences[source] = sentence_spans(text)
        ends = [e for _, e in spans]
        first = min(bisect.bisect_right(ends, start), len(spans) - 1)
        last = min(bisect.bisect_left(ends, end), len(spans) - 1)
        return text[min(spans[first][0], start) : max(spans[last][1], end)]
