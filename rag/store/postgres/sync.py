"""Keeping the PostgreSQL store in step with a corpus folder: the open that questions use (which updates it
from the folder it was indexed from, as rag.store.files.index does for the file index) and the explicit `rag index
--store`, one transaction per file. The store itself, its connections and queries, is rag.store.postgres.store."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import rag.store.postgres.store as pg
from rag.config import DEFAULT_DOCS_DIR, Settings
from rag.ingest.chunking import passages_to_index
from rag.ingest.converters import ConvertOptions
from rag.ingest.files import CorpusError, load_corpus
from rag.records import Chunk, Document
from rag.store.base import CorpusFolderMismatchError, FolderChanges, IndexReport, folder_changes, keep_in_step, tokenize
from rag.store.embedding import Embedder
from rag.store.postgres.store import EMBED_BATCH, INDEX_LOCK, PostgresStore, StoreError
from rag.text import plural

log = logging.getLogger(__name__)


def open_postgres(settings: Settings, embedder: Embedder, rebuild: bool = True) -> PostgresStore:
    """The store of settings.store, schema created if missing; like the file index, brought up to date
    with the corpus folder first when that folder is here and `rebuild` (else a stale store is an error)."""
    store = PostgresStore(settings)
    try:
        store.ensure_schema(embedder.dimension)
        same = store.params() in (None, store.expected_params(embedder.dimension))
        recorded = store.corpus_folder()
        found = Path(recorded) if recorded and Path(recorded).is_dir() else None
        # Kept in step only with the folder it was indexed from: a server started elsewhere (with some
        # other ./seeds) must not rewrite a shared database to its own folder, and a folder given that is
        # not the recorded one is refused (an explicit `rag index --store …` may switch it).
        if settings.docs_dir is not None and found is not None and found.resolve() != settings.docs_dir.resolve():
            raise CorpusFolderMismatchError(
                f"the store at {store.where} was indexed from {recorded}, not {settings.docs_dir}; to index "
                f"{settings.docs_dir} there instead, run `rag index --docs {settings.docs_dir} --store …`")
        docs = settings.docs_dir if recorded is None else found
        if docs is not None and docs.is_dir():
            changes = (folder_changes(store.file_hashes(), replace(settings, docs_dir=docs)) if same
                       else FolderChanges(settings=("the store was built with other settings",)))
            if keep_in_step(changes, rebuild, f"the store at {store.where}", docs, "rag index --store …"):
                index_postgres(replace(settings, docs_dir=docs), embedder, store, full=not same)
        elif not same:
            raise StoreError(f"the store at {store.where} was built with other settings; rebuild it with "
                             "`rag index --store … --full`")
        elif recorded is not None:
            log.warning("the store was indexed from %s, which is not here: answering from it as it is", recorded)
        store.docs_dir = docs if docs is not None and docs.is_dir() else None
        if store.counts()[1] == 0:
            raise StoreError(f"the store at {store.where} holds no passages yet; build it with `rag index --store …`")
    except BaseException:
        store.close()
        raise
    return store


def index_postgres(settings: Settings, embedder: Embedder, store: PostgresStore | None = None,
                   full: bool = False, progress: bool = False,
                   converted: dict[str, tuple[str, Document]] | None = None) -> IndexReport:
    """Bring the store up to date with the corpus folder: files whose hash is unchanged are not read
    again, removed files are deleted, and each added or changed file is written in one transaction (its old
    chunks replaced). With `full`, or when the settings changed, everything is rebuilt."""
    # One function on purpose: the session-level advisory lock and timeout bracket every step below.
    from tqdm import tqdm

    started = time.perf_counter()
    own = store is None
    store = store or PostgresStore(settings)
    try:
        store.ensure_schema(embedder.dimension)
        docs = settings.docs_dir
        if docs is None:  # the folder it was indexed from, else ./seeds for a new store; never ./seeds for a moved one
            recorded = store.corpus_folder()
            if recorded is not None and not Path(recorded).is_dir():
                raise CorpusError(f"the store at {store.where} was indexed from {recorded}, which is not there any "
                                  "more; say which folder to index with --docs")
            docs = Path(recorded) if recorded is not None else DEFAULT_DOCS_DIR
        with store.connection() as conn:
            conn.autocommit = True  # the lock is the session's; each file gets its own transaction below
            conn.execute("SET statement_timeout = 0")  # waiting for another indexer, or a large delete, is no fault
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (INDEX_LOCK,))
                expected = store.expected_params(embedder.dimension)
                stored_params = conn.execute("SELECT value FROM rag_meta WHERE key = 'params'").fetchone()
                if full or (stored_params and stored_params[0] != expected):
                    with conn.transaction():
                        conn.execute("DELETE FROM rag_documents")
                with conn.transaction():
                    conn.execute("INSERT INTO rag_meta VALUES ('params', %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                 (json.dumps(expected),))
                stored = dict(conn.execute("SELECT source, hash FROM rag_documents").fetchall())
                unchanged = {s: (h, Document(s, "")) for s, h in stored.items()}  # stand-ins: not read again
                corpus = load_corpus(docs, settings.follow_links, settings.max_file_bytes, previous=unchanged,
                                     options=ConvertOptions.from_settings(settings, progress), converted=converted)
                changed = [d for d in corpus.documents if stored.get(d.source) != corpus.file_hashes.get(d.source)]
                removed = sorted(stored.keys() - {d.source for d in corpus.documents})
                for source in removed:
                    with conn.transaction():
                        conn.execute("DELETE FROM rag_documents WHERE source = %s", (source,))
                embedded = _write_documents(conn, changed, corpus.file_hashes, embedder, settings, progress, tqdm)
                with conn.transaction():
                    for key, value in (("files", corpus.file_hashes), ("docs_dir", str(docs.resolve()))):
                        conn.execute("INSERT INTO rag_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                     (key, json.dumps(value)))
            finally:
                if not conn.closed:
                    try:
                        conn.execute("SELECT pg_advisory_unlock(%s)", (INDEX_LOCK,))
                        conn.execute("RESET statement_timeout")
                    finally:
                        conn.autocommit = False  # back to the pool as the others are
        documents, passages = store.counts()
        with store.connection() as conn:
            formats = dict(conn.execute("SELECT format, count(*) FROM rag_documents GROUP BY format ORDER BY format").fetchall())
        how = (f"{len(changed)} added or changed, {len(removed)} removed, {plural(embedded, 'passage')} embedded")
        return IndexReport(documents, passages, round(time.perf_counter() - started, 2), how, "PostgreSQL store",
                           docs, formats, corpus.skipped, corpus.unsupported, embedded, len(changed), len(removed))
    finally:
        if own:
            store.close()


def _write_documents(conn, documents: list[Document], hashes: dict[str, str], embedder: Embedder,
                     settings: Settings, progress: bool, tqdm) -> int:
    """Chunk, embed (in batches across files) and write each document in its own transaction."""
    pending: list[tuple[Document, list[Chunk]]] = []
    embedded = 0
    bar = tqdm(total=len(documents), desc="files", unit="file", disable=not progress)

    def flush() -> None:
        nonlocal embedded
        texts = [c.text for _, chunks in pending for c in chunks]
        vectors = embedder.run(texts) if texts else np.zeros((0, embedder.dimension), dtype=np.float32)
        tokens = tokenize(texts) if texts else []
        row = 0
        for doc, chunks in pending:
            with conn.transaction():
                conn.execute("DELETE FROM rag_documents WHERE source = %s", (doc.source,))
                data = doc.to_dict()
                conn.execute("INSERT INTO rag_documents (source, hash, text, format, pages, headings, ocr_pages)"
                             " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                             (doc.source, hashes[doc.source], doc.text, doc.format, json.dumps(data["pages"]),
                              json.dumps(data["headings"]), json.dumps(data["ocr_pages"])))
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO rag_chunks (source, ord, start_offset, end_offset, text, embedding, lexemes, n_tokens)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        [(c.source, k, c.start, c.end, c.text, vectors[row + k], pg.lexemes(tokens[row + k]), len(tokens[row + k]))
                         for k, c in enumerate(chunks)])
            row += len(chunks)
            bar.update(1)
        embedded += len(texts)
        pending.clear()

    size = 0
    for doc in documents:
        chunks = passages_to_index(doc, settings.chunk_max_chars, settings.chunk_overlap_sentences)
        pending.append((doc, chunks))
        size += len(chunks)
        if size >= EMBED_BATCH:
            flush()
            size = 0
    flush()
    bar.close()
    return embedded
