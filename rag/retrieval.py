"""Retriever: top passages for a question from the dense index, the BM25 index, or both fused (RRF)."""
from __future__ import annotations

from rag.config import RETRIEVAL_MODES, Settings
from rag.embedding import Embedder
from rag.index import SearchIndex, open_index, tokenize
from rag.types import Passage

MODES = RETRIEVAL_MODES


class Retriever:
    """Hybrid retrieval by reciprocal rank fusion of dense and BM25 rankings (or either alone)."""

    def __init__(
        self,
        index: SearchIndex,
        embedder: Embedder,
        mode: str = Settings.retrieval_mode,
        top_k: int = Settings.top_k,
        rrf_k: int = Settings.rrf_k,
        candidates: int = Settings.candidates_per_retriever,
        dense_weight: float = Settings.dense_weight,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if top_k < 1 or candidates < 1 or rrf_k < 0 or dense_weight < 0:
            raise ValueError("top_k and candidates must be at least 1, rrf_k and dense_weight at least 0")
        self.index = index
        self.embedder = embedder
        self.mode = mode
        self.top_k = top_k
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.dense_weight = dense_weight

    @classmethod
    def from_settings(cls, index: SearchIndex, embedder: Embedder, settings: Settings, mode: str | None = None,
                      top_k: int | None = None) -> Retriever:
        """A retriever with the settings' fusion parameters; `mode` and `top_k` override theirs."""
        return cls(index, embedder, mode or settings.retrieval_mode, top_k or settings.top_k, settings.rrf_k,
                   settings.candidates_per_retriever, settings.dense_weight)

    @classmethod
    def open(cls, settings: Settings, embedder: Embedder | None = None, index: SearchIndex | None = None,
             rebuild: bool = True) -> Retriever:
        """The one way to wire embedder -> index -> retriever: what is given is reused, the rest is loaded
        (the index opened, and rebuilt if missing or stale when `rebuild`)."""
        embedder = embedder or Embedder.from_settings(settings)
        if index is None:
            index = open_index(settings, embedder, rebuild=rebuild)
        return cls.from_settings(index, embedder, settings)

    def dense_ranking(self, query: str, n: int) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) of the n nearest chunks."""
        n = min(n, self.index.dense.ntotal)
        vector = self.embedder.run([query])
        scores, ids = self.index.dense.search(vector, n)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def bm25_ranking(self, query: str, n: int) -> list[tuple[int, float]]:
        """(chunk id, BM25 score) of the n best chunks that share a term with the query."""
        vocab = self.index.vocabulary
        tokens = [t for t in tokenize([query])[0] if t in vocab]
        if not tokens:
            return []
        n = min(n, len(self.index.chunks))
        ids, scores = self.index.bm25.retrieve([tokens], k=n, show_progress=False, n_threads=1)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]

    def run(self, query: str, top_k: int | None = None) -> list[Passage]:
        """The top_k passages for `query`, best first."""
        k = top_k or self.top_k
        if self.mode == "dense":
            ranked = self.dense_ranking(query, k)
        elif self.mode == "bm25":
            ranked = self.bm25_ranking(query, k)
        else:
            n = max(self.candidates, k)
            rankings = [self.dense_ranking(query, n), self.bm25_ranking(query, n)]
            ranked = fuse(rankings, [self.dense_weight, 1.0], self.rrf_k)[:k]
        return [Passage(self.index.chunks[i], score, rank) for rank, (i, score) in enumerate(ranked[:k])]


def fuse(rankings: list[list[tuple[int, float]]], weights: list[float], rrf_k: int) -> list[tuple[int, float]]:
    """Weighted reciprocal rank fusion: an id scores sum(weight / (rrf_k + rank)) over the rankings it is in."""
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, (i, _) in enumerate(ranking, start=1):
            scores[i] = scores.get(i, 0.0) + weight / (rrf_k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
