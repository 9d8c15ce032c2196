"""The search index: FAISS (dense, inner product on normalised vectors) + bm25s (lexical), saved as plain files.

On disk (no pickle anywhere): manifest.json (settings, file hashes, counts), documents.json, chunks.json,
dense.faiss and bm25/ (bm25s's own numpy/JSON files). The folder is written beside its target and swapped in
only once complete, so a crash never leaves a half-written index where a good one was.
"""
from __future__ import annotations

import functools
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bm25s
import faiss
import numpy as np
from pydantic import BaseModel, ValidationError

from rag.chunking import CHUNKING_VERSION, blob_chars, chunk_document
from rag.config import Settings
from rag.embedding import Embedder
from rag.errors import RagError
from rag.ingest import Corpus, CorpusError, corpus_hashes, load_corpus
from rag.types import Chunk, Document

log = logging.getLogger(__name__)
# bm25s sets its own logger to DEBUG on import and announces every build; keep it to warnings.
logging.getLogger("bm25s").setLevel(logging.WARNING)

FORMAT_VERSION = 2  # 2: documents.json holds each document's format, pages and headings
MANIFEST = "manifest.json"


class IndexLoadError(RagError):
    """Base class of the index's errors; the message is meant for the user."""


class MissingIndexError(IndexLoadError):
    """No index has been built at that folder."""


class CorruptIndexError(IndexLoadError):
    """The index folder exists but cannot be read back."""


class StaleIndexError(IndexLoadError):
    """The corpus or the settings changed since the index was built."""


class OutdatedIndexError(CorruptIndexError):
    """An index written by an older version of this project: rebuilt like a stale one."""


class UnsafeIndexFolderError(IndexLoadError):
    """The index folder holds something other than this project's index, or overlaps the corpus."""


#: Every name an index folder of this project holds; a folder with anything else in it is never replaced.
INDEX_ENTRIES = frozenset({MANIFEST, "documents.json", "chunks.json", "dense.faiss", "bm25"})
#: A build's temporary folder untouched for this long is a leftover of a killed build.
LEFTOVER_SECONDS = 600


def check_index_folder(index_dir: Path, docs_dir: Path | None = None) -> None:
    """Refuse to build into a folder that a rebuild would destroy something in: one that holds anything
    but this project's index files, is not a folder, or is, contains or lies inside the corpus folder."""
    target = Path(index_dir).resolve()
    if docs_dir is not None:
        docs = Path(docs_dir).resolve()
        if target == docs or docs in target.parents or target in docs.parents:
            raise UnsafeIndexFolderError(
                f"the index folder {index_dir} overlaps the corpus folder {docs_dir}; choose an index folder outside it")
    if not target.exists():
        return
    if not target.is_dir():
        raise UnsafeIndexFolderError(f"{index_dir} is a file, not an index folder; choose another --index")
    if not target.stat().st_mode & 0o200:
        raise UnsafeIndexFolderError(f"the index folder {index_dir} is read-only; make it writable to rebuild it")
    foreign = sorted(e.name for e in target.iterdir() if e.name not in INDEX_ENTRIES)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UnsafeIndexFolderError(
            f"{index_dir} is not a rag index folder (it holds {shown}); refusing to replace it: "
            "choose an empty or new folder for --index")


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

    @property
    def vocabulary(self) -> dict[str, int]:
        return self.bm25.vocab_dict


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
        if n := blob_chars(doc.text):
            log.warning("%s: %d characters of encoded data (base64/hex runs without spaces) are not indexed", doc.source, n)
        new = chunk_document(doc, settings.chunk_max_chars, settings.chunk_overlap_sentences)
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


def memory_index(documents: list[Document], embedder: Embedder, settings: Settings, progress: bool = False) -> SearchIndex:
    """An index over given documents, kept in memory only (evaluation corpora, training negatives)."""
    chunks, dense, bm25, _ = build_index(documents, embedder, settings, progress=progress)
    return SearchIndex({d.source: d for d in documents}, chunks, dense, bm25, {"n_chunks": len(chunks)})


def index_corpus(settings: Settings, embedder: Embedder, progress: bool = True, full: bool = False) -> SearchIndex:
    """Read the corpus folder, build the index and save it atomically to settings.index_dir.

    Incremental unless `full`: when the folder holds a readable index built with the same settings, the
    files whose hash is unchanged are neither converted nor embedded again (their text, chunks and
    vectors are reused), removed files drop out, and only added and changed files are processed. The
    result is the index a full rebuild gives (same chunks in the same order, same vectors to float
    rounding), written beside the old one and swapped in."""
    started = time.perf_counter()
    check_index_folder(settings.index_dir, settings.docs_dir)  # before any work, and before anything is touched
    previous = None if full else _reusable_index(settings)
    reuse_docs = None
    if previous is not None:
        files = previous.manifest["files"]
        reuse_docs = {s: (files[s], d) for s, d in previous.documents.items() if s in files}
    corpus = load_corpus(settings.docs_dir, settings.follow_links, settings.max_file_bytes, previous=reuse_docs)
    reuse = None
    if previous is not None:
        unchanged = {d.source for d in corpus.documents if reuse_docs.get(d.source, (None, None))[1] is d}
        keep = [i for i, c in enumerate(previous.chunks) if c.source in unchanged]
        reuse = ([previous.chunks[i] for i in keep], previous.dense.reconstruct_n(0, previous.dense.ntotal)[keep])
    chunks, dense, bm25, embedded = build_index(corpus.documents, embedder, settings, progress=progress, reuse=reuse)
    manifest = _manifest(corpus, chunks, dense, settings, time.perf_counter() - started)
    manifest["build"] = {"incremental": previous is not None, "documents_reused": corpus.reused,
                         "passages_embedded": embedded}
    index = SearchIndex({d.source: d for d in corpus.documents}, chunks, dense, bm25, manifest)
    save_index(index, settings.index_dir)
    return index


def _reusable_index(settings: Settings) -> SearchIndex | None:
    """The index in settings.index_dir if it can be built on: readable, this format, the same settings."""
    try:
        index = load_index(settings.index_dir)
    except IndexLoadError:
        return None
    if index.manifest.get("params") != index_params(settings):
        return None
    return index


def _manifest(corpus: Corpus, chunks: list[Chunk], dense: faiss.Index, settings: Settings, seconds: float) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(seconds, 2),
        "params": index_params(settings),
        "embedding_dimension": dense.d,
        "n_documents": len(corpus.documents),
        "n_chunks": len(chunks),
        "files": corpus.file_hashes,
        "formats": corpus.formats(),
        "skipped": corpus.skipped,
    }


def save_index(index: SearchIndex, target: Path) -> None:
    """Write the index to a sibling temporary folder, then swap it in place of `target` (which must be
    empty, new or an index of this project: see check_index_folder). The folder keeps its mode."""
    check_index_folder(target)
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target)
    mode = target.stat().st_mode & 0o777 if target.exists() else None
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write_json(tmp / "documents.json", {s: d.to_dict() for s, d in index.documents.items()})
        _write_json(tmp / "chunks.json", [c.to_dict() for c in index.chunks])
        faiss.write_index(index.dense, str(tmp / "dense.faiss"))
        index.bm25.save(str(tmp / "bm25"))
        _write_json(tmp / MANIFEST, index.manifest)  # written last: its presence marks a complete index
        tmp.chmod(mode if mode is not None else 0o777 & ~_umask())
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        old = target.with_name(f".{target.name}.old")
        if old.is_dir() and not target.exists():  # the swap failed half-way: put the previous index back
            old.rename(target)
        raise


def _remove_leftovers(target: Path) -> None:
    """Temporary folders of builds that were killed, and an old copy a failed swap left behind."""
    now = time.time()
    for leftover in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            if leftover.is_dir() and now - leftover.stat().st_mtime > LEFTOVER_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass
    old = target.with_name(f".{target.name}.old")
    if old.is_dir() and target.exists():
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    import os

    current = os.umask(0)
    os.umask(current)
    return current


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")


class Manifest(BaseModel):
    """What manifest.json must hold for the index to be read and checked for staleness."""

    format_version: int
    params: dict[str, Any]
    embedding_dimension: int
    n_documents: int
    n_chunks: int
    files: dict[str, str]
    skipped: dict[str, str] = {}


def read_manifest(index_dir: Path) -> dict:
    """The manifest of the index at `index_dir`, or a clear error if there is none or it is unreadable."""
    path = Path(index_dir) / MANIFEST
    if not path.exists():
        raise MissingIndexError(f"no index at {index_dir}: build it with `rag index --index {index_dir}`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorruptIndexError(f"the index at {index_dir} is damaged ({MANIFEST}: {err}); rebuild it with `rag index`") from None
    if isinstance(manifest, dict) and isinstance(manifest.get("format_version"), int) and 0 < manifest["format_version"] < FORMAT_VERSION:
        raise OutdatedIndexError(f"the index at {index_dir} was written by an older version of rag; rebuild it with `rag index`")
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise CorruptIndexError(f"the index at {index_dir} has an unknown format; rebuild it with `rag index`")
    try:
        Manifest.model_validate(manifest)
    except ValidationError as err:
        where = ".".join(str(p) for p in err.errors()[0]["loc"])
        raise CorruptIndexError(f"the index at {index_dir} is damaged ({MANIFEST}: {where}: {err.errors()[0]['msg']}); "
                                "rebuild it with `rag index`") from None
    return manifest


def load_index(index_dir: Path) -> SearchIndex:
    """Read a saved index back; any missing or damaged part gives a CorruptIndexError naming it."""
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    part = "documents.json"
    try:
        stored = json.loads((index_dir / part).read_text(encoding="utf-8"))
        documents = {s: Document.from_dict(s, d) for s, d in stored.items()}
        part = "chunks.json"
        chunks = [Chunk(**c) for c in json.loads((index_dir / part).read_text(encoding="utf-8"))]
        part = "dense.faiss"
        if not (index_dir / part).is_file():
            raise FileNotFoundError("missing")
        dense = faiss.read_index(str(index_dir / part))
        part = "bm25"
        bm25 = bm25s.BM25.load(str(index_dir / part), load_corpus=False)
    except Exception as err:  # faiss, numpy and json each raise their own kinds
        raise CorruptIndexError(f"the index at {index_dir} is damaged ({part}: {err}); rebuild it with `rag index`") from None
    if not (len(chunks) == dense.ntotal == manifest.get("n_chunks")) or dense.d != manifest.get("embedding_dimension"):
        raise CorruptIndexError(f"the index at {index_dir} is inconsistent (chunk counts differ); rebuild it with `rag index`")
    if any(c.source not in documents or documents[c.source].text[c.start : c.end] != c.text for c in chunks):
        raise CorruptIndexError(f"the index at {index_dir} is inconsistent (chunk offsets); rebuild it with `rag index`")
    return SearchIndex(documents, chunks, dense, bm25, manifest)


def staleness(manifest: dict, settings: Settings) -> list[str]:
    """Why an index no longer matches the corpus folder and settings; empty when it is current."""
    reasons = [
        f"setting {key} was {manifest['params'].get(key)!r}, now {value!r}"
        for key, value in index_params(settings).items()
        if manifest.get("params", {}).get(key) != value
    ]
    return reasons + file_changes(manifest.get("files", {}), settings)


def file_changes(built: dict[str, str], settings: Settings) -> list[str]:
    """What was added, removed or changed in the corpus folder since an index recorded these file hashes."""
    now = corpus_hashes(settings.docs_dir, settings.follow_links, settings.max_file_bytes)
    return ([f"{s} was added" for s in sorted(now.keys() - built.keys())]
            + [f"{s} was removed" for s in sorted(built.keys() - now.keys())]
            + [f"{s} changed" for s in sorted(now.keys() & built.keys()) if now[s] != built[s]])


def summarize(reasons: list[str]) -> str:
    """The first five reasons an index is stale, and how many more."""
    return "; ".join(reasons[:5]) + (f" (and {len(reasons) - 5} more)" if len(reasons) > 5 else "")


def open_index(settings: Settings, embedder: Embedder, rebuild: bool = True) -> SearchIndex:
    """The index for settings.docs_dir, rebuilt first if it is missing or stale and `rebuild` is allowed."""
    try:
        reasons = staleness(read_manifest(settings.index_dir), settings)
    except (MissingIndexError, OutdatedIndexError) as err:
        if not rebuild:
            raise
        log.warning("%s: building it", err if isinstance(err, OutdatedIndexError) else f"no index at {settings.index_dir} yet")
        return index_corpus(settings, embedder)
    if reasons:
        summary = summarize(reasons)
        if not rebuild:
            raise StaleIndexError(
                f"the index at {settings.index_dir} is out of date with {settings.docs_dir}: {summary}. "
                "Rebuild it with `rag index`."
            )
        log.warning("the index is out of date (%s): rebuilding it", summary)
        return index_corpus(settings, embedder)
    return load_index(settings.index_dir)
