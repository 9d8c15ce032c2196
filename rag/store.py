"""Index stores: where the passages, their vectors and their documents live, behind the few questions the
retriever and the pipeline ask. Two implementations: the files in `index/` (FAISS + bm25s, the default,
here) and PostgreSQL + pgvector (rag.postgres), chosen by Settings.store in the factories at the end of
this module, the one place that knows the kinds."""
from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from rag.config import Settings
from rag.embedding import Embedder
from rag.index import (
    IndexLoadError,
    IndexReport,
    SearchIndex,
    index_corpus,
    index_identity,
    load_index,
    open_index,
    recorded_corpus,
    remove_index_folder,
)
from rag.ingest import CorpusWatch
from rag.types import Chunk, Document

log = logging.getLogger(__name__)


class Store(Protocol):
    """What retrieval and answering need from an index store. Chunk ids are the store's own keys."""

    kind: str
    documents: Mapping[str, Document]  # source -> Document, read when an answer is cited
    docs_dir: Path | None  # the corpus folder it is kept in step with (None: not here, or not recorded)

    def dense_ranking(self, vector: np.ndarray, n: int, sources: list[str] | None = None) -> list[tuple[Hashable, float]]:
        """(chunk id, inner product) of the n chunks nearest to a normalised query vector, best first; with
        `sources`, only chunks of those documents are searched (a filter in the search, not after it)."""

    def lexical_ranking(self, tokens: list[str], n: int, sources: list[str] | None = None) -> list[tuple[Hashable, float]]:
        """(chunk id, BM25 score) of the n best chunks for the query's lexical tokens (rag.index.tokenize),
        only among `sources`' chunks when given."""

    def sources_matching(self, patterns: list[str]) -> list[str]:
        """The documents whose source is one of `patterns` or matches one as a glob (`reports/2024/*.pdf`)."""

    def chunks(self, ids: list[Hashable]) -> list[Chunk | None]:
        """The chunks with these ids, in the same order (None for one removed since it was ranked)."""

    def counts(self) -> tuple[int, int]:
        """(documents, passages) in the store now."""

    def document_stats(self) -> dict[str, tuple[str, int]]:
        """source -> (format, passages) of every document in the store."""

    def file_hashes(self) -> dict[str, str]:
        """source -> SHA-256 of the file each document was read from (to spot changed corpus files)."""

    def describe(self) -> dict:
        """What /health says about the store."""

    def snapshot(self) -> contextlib.AbstractContextManager:
        """A block within which every read sees the store as of its start (one question's reads)."""

    def refresh(self) -> bool:
        """Take up a newer index written by another process (`rag index`); True when it did. Called between
        questions, never during one."""

    def corpus_watch(self, settings: Settings) -> CorpusWatch | None:
        """What notices corpus files changed since indexing (None where the store changes by itself)."""

    def close(self) -> None:
        """Release what the store holds open (connections)."""


class FileStore:
    """The default store: an index read from `index/` (rag.index), all in memory."""

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


def match_sources(sources: Iterable[str], patterns: list[str]) -> list[str]:
    """The sources equal to a pattern or matching it as a glob (`*` also crosses `/`, as fnmatch does)."""
    exact = set(patterns)
    return [s for s in sources if s in exact or any(fnmatch.fnmatchcase(s, p) for p in patterns)]


def open_store(settings: Settings, embedder: Embedder, rebuild: bool = True) -> Store:
    """The store the settings name, kept in step with its corpus folder (rag.index.open_index, or the
    PostgreSQL store's own open)."""
    if settings.store:
        from rag.postgres_index import open_postgres

        return open_postgres(settings, embedder, rebuild=rebuild)
    return FileStore(open_index(settings, embedder, rebuild=rebuild))


def read_store(settings: Settings) -> Store:
    """The store as it stands, to read documents from (no model loaded, nothing compared): `rag show`."""
    if settings.store:
        from rag.postgres import PostgresStore

        return PostgresStore(settings)
    return FileStore(load_index(settings.index_dir))


def drop_store(settings: Settings) -> None:
    """Remove the index the settings name: the index folder, or the PostgreSQL schema (a deleted collection's)."""
    if settings.store:
        from rag.postgres import PostgresStore

        store = PostgresStore(settings)
        try:
            store.drop()
        finally:
            store.close()
    else:
        remove_index_folder(settings.index_dir)


def open_feedback(settings: Settings):
    """Where verdicts on answers are kept (rag.feedback): a `rag_feedback` table in the PostgreSQL store's
    database, or SQLite in the data folder for the file store."""
    from rag.feedback import FeedbackStore, PostgresFeedback

    if settings.store:
        from rag.postgres import require_driver

        require_driver()
        return PostgresFeedback(settings.store, settings.store_timeout_seconds)
    return FeedbackStore(settings.data_dir)


def index_store(settings: Settings, embedder: Embedder, full: bool = False, progress: bool = True,
                hold: Callable[[str], bool] | None = None,
                converted: dict[str, tuple[str, Document]] | None = None) -> IndexReport:
    """An explicit `rag index` into the store the settings name: added, changed and removed files (those in
    `converted`, source -> (file hash, document), taken as converted already: an upload is converted once).
    `hold` (files still being written, which stay as indexed: rag.watch) is for the file store only."""
    if settings.store:
        from rag.postgres_index import index_postgres

        if hold is not None:
            raise ValueError("holding files back is for the file store only")
        return index_postgres(settings, embedder, full=full, progress=progress, converted=converted)
    return IndexReport.of(index_corpus(settings, embedder, progress=progress, full=full, hold=hold,
                                       converted=converted))
