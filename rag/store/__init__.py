"""Index stores: where the passages, their vectors and their documents live. Two implementations behind
rag.store.base.Store: the files in `index/` (FAISS + bm25s, the default: rag.store.files) and PostgreSQL +
pgvector (rag.store.postgres), chosen by Settings.store in the factories here, the one place that knows the
kinds."""
from __future__ import annotations

from collections.abc import Callable

from rag.config import Settings
from rag.records import Document
from rag.store.base import Store, match_sources
from rag.store.embedding import Embedder
from rag.store.files.index import IndexReport, index_corpus, load_index, open_index, remove_index_folder
from rag.store.files.store import FileStore

__all__ = ["FileStore", "Store", "drop_store", "index_store", "match_sources", "open_store", "read_store"]


def open_store(settings: Settings, embedder: Embedder, rebuild: bool = True) -> Store:
    """The store the settings name, kept in step with its corpus folder (rag.store.files.index.open_index, or the
    PostgreSQL store's own open)."""
    if settings.store:
        from rag.store.postgres.sync import open_postgres

        return open_postgres(settings, embedder, rebuild=rebuild)
    return FileStore(open_index(settings, embedder, rebuild=rebuild))


def read_store(settings: Settings) -> Store:
    """The store as it stands, to read documents from (no model loaded, nothing compared): `rag show`."""
    if settings.store:
        from rag.store.postgres.store import PostgresStore

        return PostgresStore(settings)
    return FileStore(load_index(settings.index_dir))


def drop_store(settings: Settings) -> None:
    """Remove the index the settings name: the index folder, or the PostgreSQL schema (a deleted collection's)."""
    if settings.store:
        from rag.store.postgres.store import PostgresStore

        store = PostgresStore(settings)
        try:
            store.drop()
        finally:
            store.close()
    else:
        remove_index_folder(settings.index_dir)


def index_store(settings: Settings, embedder: Embedder, full: bool = False, progress: bool = True,
                hold: Callable[[str], bool] | None = None,
                converted: dict[str, tuple[str, Document]] | None = None) -> IndexReport:
    """An explicit `rag index` into the store the settings name: added, changed and removed files (those in
    `converted`, source -> (file hash, document), taken as converted already: an upload is converted once).
    `hold` (files still being written, which stay as indexed: rag.service.watch) is for the file store only."""
    if settings.store:
        from rag.store.postgres.sync import index_postgres

        if hold is not None:
            raise ValueError("holding files back is for the file store only")
        return index_postgres(settings, embedder, full=full, progress=progress, converted=converted)
    return IndexReport.of(index_corpus(settings, embedder, progress=progress, full=full, hold=hold,
                                       converted=converted))
