"""The search index in memory: FAISS (dense, inner product on normalised vectors) + bm25s (lexical) over the
chunks of some documents; built here, saved and loaded by rag.index_files, kept in step by rag.index."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import bm25s
import faiss
import numpy as np

from rag.chunking import CHUNKING_VERSION, passages_to_index
from rag.config import Settings
from rag.embedding import Embedder
from rag.ingest import CorpusError
from rag.text import plural
from rag.types import Chunk, Document

log = logging.getLogger(__name__)
# bm25s sets its own logger to DEBUG on import and announces every build; keep it to warnings.
logging.getLogger("bm25s").setLevel(logging.WARNING)


@functools.lru_cache(maxsize=1)
def _stemmer():
    """The Snowball English stemmer, built once (tokenize runs on every query); PyStemmer objects are not
    thread-safe, so concurrent callers serialise retrieval, as Pipeline does."""
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lexical tokens for BM25: lower-cased words, English stop words out, Snowball-stemmed."""
    return bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


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


@dataclass
class IndexReport:
    """What one explicit `rag index` did, whichever the store (what its summary line says)."""

    documents: int
    passages: int
    seconds: float
    how: str  # "full build", or what was reused, added, removed and embedded
    target: str  # the index folder, or the database
    docs_dir: Path | None = None
    formats: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    unsupported: dict[str, int] = field(default_factory=dict)
    embedded: int = 0
    added_or_changed: int = 0
    removed: int = 0

    @classmethod
    def of(cls, index: SearchIndex) -> IndexReport:
        m, build = index.manifest, index.manifest["build"]
        how = (f"{build['documents_reused']} unchanged reused, {plural(build['passages_embedded'], 'passage')} embedded"
               if build["incremental"] else "full build")
        return cls(m["n_documents"], m["n_chunks"], m["build_seconds"], how, str(index.path), index.docs_dir,
                   m["formats"], m["skipped"], m["unsupported"], build["passages_embedded"])


def index_params(settings: Settings) -> dict[str, object]:
    """What an index's content depends on: the settings, and the version of the chunking rules."""
    return {**settings.index_params(), "chunking": CHUNKING_VERSION}


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
