"""Retriever: top passages for a question from the store's dense ranking, its BM25 ranking, or both fused
(weighted RRF, computed here for every store)."""
from __future__ import annotations

from collections.abc import Hashable

from rag.config import RETRIEVAL_MODES, Settings
from rag.records import Passage
from rag.store import FileStore, Store, open_store
from rag.store.embedding import Embedder
from rag.store.files.index import SearchIndex, tokenize

MODES = RETRIEVAL_MODES


class Retriever:
    """Hybrid retrieval by reciprocal rank fusion of dense and BM25 rankings (or either alone)."""

    def __init__(
        self,
        store: Store | SearchIndex,
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
        self.store: Store = FileStore(store) if isinstance(store, SearchIndex) else store
        self.embedder = embedder
        self.mode = mode
        self.top_k = top_k
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.dense_weight = dense_weight

    @classmethod
    def from_settings(cls, store: Store | SearchIndex, embedder: Embedder, settings: Settings, mode: str | None = None,
                      top_k: int | None = None) -> Retriever:
        """A retriever with the settings' fusion parameters; `mode` and `top_k` override theirs."""
        return cls(store, embedder, mode=mode or settings.retrieval_mode, top_k=top_k or settings.top_k,
                   rrf_k=settings.rrf_k, candidates=settings.candidates_per_retriever, dense_weight=settings.dense_weight)

    @classmethod
    def open(cls, settings: Settings, embedder: Embedder | None = None, index: SearchIndex | None = None,
             rebuild: bool = True) -> Retriever:
        """The one way to wire embedder -> store -> retriever: what is given is reused, the rest is loaded
        (the file index opened, and rebuilt if missing or stale when `rebuild`; or the PostgreSQL store of
        settings.store, brought up to date the same way)."""
        embedder = embedder or Embedder.from_settings(settings)
        if index is not None:
            return cls.from_settings(index, embedder, settings)
        return cls.from_settings(open_store(settings, embedder, rebuild=rebuild), embedder, settings)

    def dense_ranking(self, query: str, n: int, sources: list[str] | None = None) -> list[tuple[Hashable, float]]:
        """(chunk id, cosine similarity) of the n nearest chunks (of `sources` only, when given)."""
        return self.store.dense_ranking(self.embedder.run([query]), n, sources)

    def bm25_ranking(self, query: str, n: int, sources: list[str] | None = None) -> list[tuple[Hashable, float]]:
        """(chunk id, BM25 score) of the n best chunks that share a term with the query."""
        tokens = tokenize([query])[0]
        return self.store.lexical_ranking(tokens, n, sources) if tokens else []

    def run(self, query: str, top_k: int | None = None, sources: list[str] | None = None) -> list[Passage]:
        """The top_k passages for `query`, best first; with `sources` (document names, from
        store.sources_matching), only passages of those documents are searched."""
        k = top_k or self.top_k
        if sources is not None and not sources:
            return []
        if self.mode == "dense":
            ranked = self.dense_ranking(query, k, sources)
        elif self.mode == "bm25":
            ranked = self.bm25_ranking(query, k, sources)
        else:
            n = max(self.candidates, k)
            ranked = self.hybrid_ranking(self.dense_ranking(query, n, sources), self.bm25_ranking(query, n, sources))
        return self.passages(ranked[:k])

    def hybrid_ranking(self, dense: list[tuple[Hashable, float]], lexical: list[tuple[Hashable, float]]):
        """The dense and BM25 rankings fused (weighted RRF: BM25 counts fully, dense at dense_weight)."""
        return fuse([dense, lexical], [self.dense_weight, 1.0], self.rrf_k)

    def passages(self, ranked: list[tuple[Hashable, float]]) -> list[Passage]:
        """The chunks of a ranking as passages, best first."""
        found = [(chunk, score) for chunk, (_, score) in zip(self.store.chunks([i for i, _ in ranked]), ranked)
                 if chunk is not None]  # a shared store may have dropped a chunk since it was ranked
        return [Passage(chunk, score, rank) for rank, (chunk, score) in enumerate(found)]


def fuse(rankings: list[list[tuple[Hashable, float]]], weights: list[float], rrf_k: int) -> list[tuple[Hashable, float]]:
    """Weighted reciprocal rank fusion: an id scores sum(weight / (rrf_k + rank)) over the rankings it is in."""
    scores: dict[Hashable, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, (i, _) in enumerate(ranking, start=1):
            scores[i] = scores.get(i, 0.0) + weight / (rrf_k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
