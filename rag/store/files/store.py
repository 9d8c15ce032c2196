"""The default store: an index read from `index/` (FAISS + bm25s, all in memory) behind the Store protocol."""
from __future__ import annotations

import contextlib
import logging

import faiss
import numpy as np

from rag.config import Settings
from rag.ingest.files import CorpusWatch
from rag.records import Chunk
from rag.store.base import match_sources
from rag.store.files.index import IndexLoadError, SearchIndex, index_identity, load_index, recorded_corpus

log = logging.getLogger(__name__)


class FileStore:
    """The default store: an index read from `index/` (rag.store.files.index), all in memory."""

    kind = "files"

    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        self.documents = index.documents
        self.docs_dir = index.docs_dir
        self._rows: tuple[tuple | None, np.ndarray] = (None, np.zeros(0, dtype=np.int64))  # last filter's chunk rows

    def dense_ranking(self, vector: np.ndarray, n: int, sources: list[str] | None = None) -> list[tuple[int, float]]:
        params = None
        if sources is not None:
            rows = self._rows_of(sources)
            if not len(rows):
                return []
            n = min(n, len(rows))
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(rows))
        n = min(n, self.index.dense.ntotal)
        scores, ids = self.index.dense.search(np.atleast_2d(vector), n, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def lexical_ranking(self, tokens: list[str], n: int, sources: list[str] | None = None) -> list[tuple[int, float]]:
        vocab = self.index.vocabulary
        tokens = [t for t in tokens if t in vocab]
        if not tokens:
            return []
        mask = None
        if sources is not None:
            rows = self._rows_of(sources)
            if not len(rows):
                return []
            mask = np.zeros(len(self.index.chunks), dtype=np.float32)
            mask[rows] = 1.0
        n = min(n, len(self.index.chunks))
        ids, scores = self.index.bm25.retrieve([tokens], k=n, show_progress=False, n_threads=1, weight_mask=mask)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]

    def _rows_of(self, sources: list[str]) -> np.ndarray:
        """The chunk rows of these documents, found once per filter (hybrid search asks twice; refresh forgets)."""
        key = tuple(sources)
        if self._rows[0] != key:
            wanted = set(sources)
            self._rows = (key, np.array([i for i, c in enumerate(self.index.chunks) if c.source in wanted], dtype=np.int64))
        return self._rows[1]

    def sources_matching(self, patterns: list[str]) -> list[str]:
        return match_sources(self.documents, patterns)

    def chunks(self, ids: list[int]) -> list[Chunk]:
        return [self.index.chunks[i] for i in ids]

    def counts(self) -> tuple[int, int]:
        return len(self.index.documents), len(self.index.chunks)

    def document_stats(self) -> dict[str, tuple[str, int]]:
        passages: dict[str, int] = {}
        for chunk in self.index.chunks:
            passages[chunk.source] = passages.get(chunk.source, 0) + 1
        return {s: (d.format, passages.get(s, 0)) for s, d in self.index.documents.items()}

    def file_hashes(self) -> dict[str, str]:
        return dict(self.index.manifest.get("files") or {})

    def describe(self) -> dict:
        return {"kind": self.kind, "reachable": True}

    def snapshot(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # an in-memory index does not change under a reader

    def refresh(self) -> bool:
        """Reload the index when its folder holds another build than the one in memory (a stat per call);
        a new build that cannot be read is reported and the one in memory kept."""
        path = self.index.path
        if path is None or index_identity(path) in (None, self.index.identity):
            return False
        try:
            index = load_index(path)
        except IndexLoadError as err:
            log.warning("the index at %s changed on disk but cannot be read (%s): still answering from the previous one",
                        path, err)
            return False
        index.docs_dir = recorded_corpus(index.manifest, path) or self.docs_dir
        self.index, self.documents, self.docs_dir = index, index.documents, index.docs_dir
        self._rows = (None, self._rows[1][:0])  # rows of the previous build
        log.info("the index at %s was rebuilt: reloaded (%d documents, %d passages)", path, *self.counts())
        return True

    def corpus_watch(self, settings: Settings) -> CorpusWatch | None:
        if self.docs_dir is None or not self.docs_dir.is_dir():
            return None
        return CorpusWatch(self.docs_dir, self.file_hashes(), settings.follow_links, settings.max_file_bytes,
                           settings.corpus_check_seconds)

    def close(self) -> None:
        pass  # all in memory
