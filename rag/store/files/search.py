"""The search index in memory: FAISS (dense, inner product on normalised vectors) + bm25s (lexical) over the
chunks of some documents; built here, saved and loaded by rag.store.files.folder, kept in step by rag.store.files.index."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import bm25s
import faiss
import numpy as np

from rag.config import Settings
from rag.ingest.chunking import passages_to_index
from rag.ingest.files import CorpusError
from rag.records import Chunk, Document
from rag.store.base import tokenize
from rag.store.embedding import Embedder

log = logging.getLogger(__name__)
# bm25s sets its own logger to DEBUG on import and announces every build; keep it to warnings.
logging.getLogger("bm25s").setLevel(logging.WARNING)


@dataclass
class SearchIndex:
    """Everything retrieval needs, in memory."""

    documents: dict[str, Document]
    chunks: list[Chunk]
    dense: faiss.Index
    bm25: bm25s.BM25
    manifest: dict
    docs_dir: Path | None = None  # the corpus folder it is kept in step with (None: not here, or not recorded)
    path: Path | None = None  # the folder it was read from or saved to (None: in memory only)
    identity: tuple[int, int] | None = None  # which build of that folder it is (index_identity)

    @property
    def vocabulary(self) -> dict[str, int]:
        return self.bm25.vocab_dict


def build_index(
    documents: list[Document], embedder: Embedder, settings: Settings, progress: bool = False,
    reuse: tuple[list[Chunk], np.ndarray] | None = None,
) -> tuple[list[Chunk], faiss.Index, bm25s.BM25, int]:
    """Chunk the documents and build both indexes over the chunks, in memory; returns how many passages
    were embedded. With `reuse` (chunks and their vectors from the previous index), the chunks of a
    document that are there already keep their vectors, and only the other documents are embedded."""
    stored: dict[str, list[int]] = {}
    if reuse is not None:
        for i, chunk in enumerate(reuse[0]):
            stored.setdefault(chunk.source, []).append(i)
    chunks: list[Chunk] = []
    rows: list[int | None] = []  # per chunk: its row in reuse's vectors, or None to embed it
    for doc in documents:
        if doc.source in stored:
            chunks += [reuse[0][i] for i in stored[doc.source]]
            rows += stored[doc.source]
            continue
        new = passages_to_index(doc, settings.chunk_max_chars, settings.chunk_overlap_sentences)
        chunks += new
        rows += [None] * len(new)
    if not chunks:
        raise CorpusError("the documents hold no text to index (only encoded data or white space)")
    todo = [i for i, row in enumerate(rows) if row is None]
    fresh = embedder.run([chunks[i].text for i in todo], progress=progress)
    vectors = np.zeros((len(chunks), fresh.shape[1] if len(todo) else reuse[1].shape[1]), dtype=np.float32)
    if todo:
        vectors[todo] = fresh
    kept = [i for i, row in enumerate(rows) if row is not None]
    if kept:
        vectors[kept] = reuse[1][[rows[i] for i in kept]]
    dense = faiss.IndexFlatIP(vectors.shape[1])
    dense.add(vectors)
    bm25 = bm25s.BM25()
    bm25.index(sorted_vocabulary_ids(tokenize([c.text for c in chunks])), show_progress=False)
    return chunks, dense, bm25, len(todo)


def sorted_vocabulary_ids(docs: list[list[str]]) -> tuple[list[list[int]], dict[str, int]]:
    """Token ids over an alphabetical vocabulary: bm25s numbers tokens in set order, which changes from run to
    run, so the same corpus would otherwise give differently written (if equivalent) index files."""
    vocab = {token: i for i, token in enumerate(sorted({t for doc in docs for t in doc}))}
    return [[vocab[t] for t in doc] for doc in docs], vocab


def memory_documents(documents) -> list[Document]:
    """Documents given in memory, checked: each a Document or a str (named `doc-N.txt`), sources unique,
    texts that are text; the empty ones left out. A CorpusError says what is wrong."""
    if isinstance(documents, (str, Document)):
        documents = [documents]
    out: list[Document] = []
    seen: set[str] = set()
    for n, doc in enumerate(documents, start=1):
        if isinstance(doc, str):
            doc = Document(f"doc-{n}.txt", doc)
        if not isinstance(doc, Document) or not isinstance(doc.source, str) or not isinstance(doc.text, str):
            raise CorpusError(f"document {n} is a {type(doc).__name__}: give rag.Document(source, text) or a str")
        if doc.source in seen:
            raise CorpusError(f"two documents are named {doc.source!r}: sources must be unique (citations name them)")
        seen.add(doc.source)
        if doc.text.strip():
            out.append(doc)
    if not out:
        raise CorpusError("no document with text was given")
    return out


def memory_index(documents: list[Document], embedder: Embedder, settings: Settings, progress: bool = False) -> SearchIndex:
    """An index over given documents, kept in memory only (evaluation corpora, training negatives)."""
    chunks, dense, bm25, _ = build_index(documents, embedder, settings, progress=progress)
    return SearchIndex({d.source: d for d in documents}, chunks, dense, bm25, {"n_chunks": len(chunks)})
