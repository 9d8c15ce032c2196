"""The search index: FAISS (dense, inner product on normalised vectors) + bm25s (lexical), saved as plain files.

On disk (no pickle anywhere): manifest.json (settings, file hashes, counts), documents.json, chunks.json,
dense.faiss and bm25/ (bm25s's own numpy/JSON files). The folder is written beside its target and swapped in
only once complete, so a crash never leaves a half-written index where a good one was.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import bm25s
import faiss
import numpy as np
from pydantic import BaseModel, ValidationError

from rag.chunking import CHUNKING_VERSION, blob_chars, chunk_document
from rag.config import DEFAULT_DOCS_DIR, Settings
from rag.embedding import Embedder
from rag.errors import RagError
from rag.ingest import Corpus, CorpusError, corpus_hashes, load_corpus
from rag.text import plural
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


class CorpusFolderMismatchError(IndexLoadError):
    """A documents folder was given that is not the one the index was built from."""


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


def cached_index_dir(docs_dir: Path) -> Path:
    """Where the Python API keeps the index of a folder when no index folder is given: in the cache, named
    for the folder and keyed by its absolute path (never in the working directory)."""
    import hashlib

    from rag.runtime import cache_dir

    folder = Path(docs_dir).resolve()
    return cache_dir() / "indexes" / f"{folder.name or 'root'}-{hashlib.sha256(str(folder).encode()).hexdigest()[:16]}"


def needs_indexing(settings: Settings) -> bool:
    """Whether an explicit index of settings.docs_dir would change the index at settings.index_dir: none
    there, unreadable, built from another folder or with other settings, or any file added, changed or removed."""
    try:
        manifest = read_manifest(settings.index_dir)
    except IndexLoadError:
        return True
    if not _same_folder(settings.docs_dir, recorded_corpus(manifest, settings.index_dir)):
        return True
    return bool(staleness(manifest, settings))


def memory_index(documents: list[Document], embedder: Embedder, settings: Settings, progress: bool = False) -> SearchIndex:
    """An index over given documents, kept in memory only (evaluation corpora, training negatives)."""
    chunks, dense, bm25, _ = build_index(documents, embedder, settings, progress=progress)
    return SearchIndex({d.source: d for d in documents}, chunks, dense, bm25, {"n_chunks": len(chunks)})


def index_corpus(settings: Settings, embedder: Embedder, progress: bool = True, full: bool = False) -> SearchIndex:
    """Read the corpus folder, build the index and save it atomically to settings.index_dir (an explicit
    `rag index`: the only build that may switch an index to another folder than the one it records).

    Incremental unless `full`: when the folder holds a readable index built with the same settings, the
    files whose hash is unchanged are neither converted nor embedded again (their text, chunks and
    vectors are reused), removed files drop out, and only added and changed files are processed. The
    result is the index a full rebuild gives (same chunks in the same order, same vectors to float
    rounding), written beside the old one and swapped in. One build at a time per index folder."""
    started = time.perf_counter()
    with index_lock(settings.index_dir):
        settings = replace(settings, docs_dir=_docs_to_index(settings))
        check_index_folder(settings.index_dir, settings.docs_dir)  # before any work, and before anything is touched
        previous = None if full else _reusable_index(settings)
        reuse_docs = None
        if previous is not None:
            files = previous.manifest["files"]
            reuse_docs = {s: (files[s], d) for s, d in previous.documents.items() if s in files}
        corpus = load_corpus(settings.docs_dir, settings.follow_links, settings.max_file_bytes, previous=reuse_docs)
        reuse = None
        if previous is not None:
            kept = {s for s, (digest, _) in reuse_docs.items() if corpus.file_hashes.get(s) == digest}
            keep = [i for i, c in enumerate(previous.chunks) if c.source in kept]
            reuse = ([previous.chunks[i] for i in keep], previous.dense.reconstruct_n(0, previous.dense.ntotal)[keep])
        chunks, dense, bm25, embedded = build_index(corpus.documents, embedder, settings, progress=progress, reuse=reuse)
        manifest = _manifest(corpus, chunks, dense, settings, time.perf_counter() - started)
        manifest["build"] = {"incremental": previous is not None, "documents_reused": corpus.reused,
                             "passages_embedded": embedded}
        index = SearchIndex({d.source: d for d in corpus.documents}, chunks, dense, bm25, manifest, settings.docs_dir)
        save_index(index, settings.index_dir)
        index.path, index.identity = Path(settings.index_dir), index_identity(Path(settings.index_dir))
    return index


def _docs_to_index(settings: Settings) -> Path:
    """The folder an explicit build reads: the one given, else the one the index records, else ./seeds for
    a new index. A recorded folder that is gone is an error, never a reason to fall back to ./seeds."""
    if settings.docs_dir is not None:
        try:
            manifest = read_manifest(settings.index_dir)
        except IndexLoadError:
            return settings.docs_dir
        built_from = manifest.get("docs_dir")
        if built_from and not _same_folder(settings.docs_dir, recorded_corpus(manifest, settings.index_dir)):
            log.warning("the index at %s was built from %s: rebuilding it from %s", settings.index_dir,
                        built_from, settings.docs_dir)
        return settings.docs_dir
    try:
        manifest = read_manifest(settings.index_dir)
    except IndexLoadError:
        return DEFAULT_DOCS_DIR
    if not manifest.get("docs_dir"):
        return DEFAULT_DOCS_DIR
    found = recorded_corpus(manifest, settings.index_dir)
    if found is None:
        raise CorpusError(f"the index at {settings.index_dir} was built from {manifest['docs_dir']}, which is not "
                          "there any more; say which folder to index with --docs")
    return found


def recorded_corpus(manifest: dict, index_dir: Path) -> Path | None:
    """The corpus folder an index records it was built from, where it is now: beside the index as recorded
    (the two moved together; this is how the committed index finds seeds/ in any clone), else at its
    absolute path; None when the index records none or neither is a folder."""
    candidates = []
    if isinstance(manifest.get("docs_dir_relative"), str):
        candidates.append(Path(os.path.normpath(Path(index_dir).resolve() / manifest["docs_dir_relative"])))
    if isinstance(manifest.get("docs_dir"), str):
        candidates.append(Path(manifest["docs_dir"]))
    return next((c for c in candidates if c.is_dir()), None)


def _same_folder(a: Path | None, b: Path | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def corpus_folder(settings: Settings, manifest: dict) -> Path | None:
    """The folder an existing index is kept in step with when questions are asked: the recorded one (a
    folder given must be that one: CorpusFolderMismatchError otherwise), or the one given when the index
    records none; None when the recorded folder is not here (the index is then used as it is)."""
    found = recorded_corpus(manifest, settings.index_dir)
    if settings.docs_dir is None:
        return found
    if manifest.get("docs_dir") and found is not None and not _same_folder(settings.docs_dir, found):
        raise CorpusFolderMismatchError(
            f"the index at {settings.index_dir} was built from {found}, not {settings.docs_dir}; to index "
            f"{settings.docs_dir} there instead, run `rag index --docs {settings.docs_dir} --index {settings.index_dir}`"
            " (or leave out --docs to use the folder it was built from)")
    return settings.docs_dir


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
        # The folder it was built from, absolute and relative to the index (rag.index.recorded_corpus).
        "docs_dir": str(Path(settings.docs_dir).resolve()),
        "docs_dir_relative": os.path.relpath(Path(settings.docs_dir).resolve(), Path(settings.index_dir).resolve()),
        "formats": corpus.formats(),
        "skipped": corpus.skipped,
        "unsupported": corpus.unsupported,
    }


def save_index(index: SearchIndex, target: Path) -> None:
    """Write the index to a sibling temporary folder, then swap it in place of `target` (which must be
    empty, new or an index of this project: see check_index_folder). The folder keeps its mode. Writers
    of one folder take turns (index_lock); readers that meet the swap's instant wait for it (read_manifest)."""
    with index_lock(target):
        _save_index(index, target)


def _save_index(index: SearchIndex, target: Path) -> None:
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


_LOCKS_GUARD = threading.Lock()
_LOCKS: dict[str, list] = {}  # index folder -> [RLock, depth]: re-entrant within a process, flock between processes


@contextlib.contextmanager
def index_lock(index_dir: Path):
    """Hold the index folder's write lock (an flock on `.NAME.lock` beside it): a second `rag index` of the
    same folder, in this process or another, waits for the first (saying so) instead of racing its swap."""
    target = Path(index_dir).resolve()
    with _LOCKS_GUARD:
        entry = _LOCKS.setdefault(str(target), [threading.RLock(), 0])
    with entry[0]:
        if entry[1]:  # this thread holds it already (a build that saves)
            entry[1] += 1
            try:
                yield
            finally:
                entry[1] -= 1
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target.with_name(f".{target.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("another process is writing the index at %s: waiting for it to finish", index_dir)
                fcntl.flock(fd, fcntl.LOCK_EX)
            entry[1] = 1
            try:
                yield
            finally:
                entry[1] = 0
        finally:
            os.close(fd)  # releases the flock


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


def _wait_for_swap(index_dir: Path, seconds: float = 2.0) -> None:
    """A save swaps the new folder in with two renames; a reader arriving between them finds no folder but
    the old copy beside it, and waits for the new one (microseconds, unless the writer died there)."""
    index_dir = index_dir.resolve()
    old = index_dir.with_name(f".{index_dir.name}.old")
    waited = 0.0
    while not index_dir.exists() and old.is_dir() and waited < seconds:
        time.sleep(0.02)
        waited += 0.02


def read_manifest(index_dir: Path) -> dict:
    """The manifest of the index at `index_dir`, or a clear error if there is none or it is unreadable."""
    path = Path(index_dir) / MANIFEST
    _wait_for_swap(Path(index_dir))
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


def load_index(index_dir: Path, docs_dir: Path | None = None) -> SearchIndex:
    """Read a saved index back; any missing or damaged part gives a CorruptIndexError naming it. A save
    swapped in while the files were being read is read again (the parts must come from one build)."""
    for attempt in range(3):
        before = index_identity(Path(index_dir))
        try:
            index = _load_index(Path(index_dir))
        except IndexLoadError:
            if attempt == 2 or index_identity(Path(index_dir)) == before:
                raise
            continue
        if index_identity(Path(index_dir)) == before or attempt == 2:
            index.docs_dir, index.path, index.identity = docs_dir, Path(index_dir), before
            return index
    raise AssertionError("unreachable")


def index_identity(index_dir: Path) -> tuple[int, int] | None:
    """Which build is in the folder now: the manifest's inode and change time (a swap changes both)."""
    try:
        st = (index_dir / MANIFEST).stat()
    except OSError:
        return None
    return st.st_ino, st.st_ctime_ns


def _load_index(index_dir: Path) -> SearchIndex:
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
    """The index at settings.index_dir, kept in step with the folder it records it was built from (or the
    one given, which must be that folder). Added and changed files are indexed first when `rebuild` is
    allowed; removing documents takes an explicit `rag index`, so a question never empties an index because
    a folder was moved, unmounted or emptied (the index is used as it is, with a warning)."""
    try:
        manifest = read_manifest(settings.index_dir)
    except (MissingIndexError, OutdatedIndexError) as err:
        if not rebuild:
            raise
        if isinstance(err, OutdatedIndexError) and settings.docs_dir is None:
            raise OutdatedIndexError(f"{str(err).split(';')[0]}; rebuild it with `rag index --docs DIR "
                                     f"--index {settings.index_dir}`") from None
        docs = settings.docs_dir or DEFAULT_DOCS_DIR
        log.warning("%s: building it from %s", err if isinstance(err, OutdatedIndexError)
                    else f"no index at {settings.index_dir} yet", docs)
        return index_corpus(replace(settings, docs_dir=docs), embedder)
    docs = corpus_folder(settings, manifest)
    if docs is None:
        log.warning("the index at %s %s: answering from it as it is (give the folder with --docs to keep it in step)",
                    settings.index_dir, f"was built from {manifest['docs_dir']}, which is not here"
                    if manifest.get("docs_dir") else "does not record the folder it was built from")
        return load_index(settings.index_dir)
    settings = replace(settings, docs_dir=docs)
    reasons = staleness(manifest, settings)
    if not reasons:
        return load_index(settings.index_dir, docs)
    if not rebuild:
        raise StaleIndexError(f"the index at {settings.index_dir} is out of date with {docs}: {summarize(reasons)}. "
                              "Rebuild it with `rag index`.")
    removed = [r.removesuffix(" was removed") for r in reasons if r.endswith(" was removed")]
    if removed:
        log.warning("%s of the index %s no longer in %s (%s): answering from the index as it is; run `rag index` "
                    "to update it", plural(len(removed), "document"), "is" if len(removed) == 1 else "are", docs,
                    ", ".join(removed[:3]) + (f" and {len(removed) - 3} more" if len(removed) > 3 else ""))
        return load_index(settings.index_dir, docs)
    log.warning("the index is out of date (%s): updating it", summarize(reasons))
    return index_corpus(settings, embedder)

