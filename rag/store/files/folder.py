"""The saved index: plain files in one folder (no pickle anywhere): manifest.json (settings, file hashes,
counts), documents.json, chunks.json, dense.faiss and bm25/ (bm25s's own numpy/JSON files). The folder is
written beside its target and swapped in only once complete, one writer at a time, so a crash or a second
build never leaves a half-written index where a good one was; and the errors a damaged one gives."""
from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import bm25s
import faiss
from pydantic import BaseModel, ValidationError

from rag.records import Chunk, Document
from rag.store.base import CorpusFolderMismatchError, IndexLoadError, StaleIndexError  # noqa: F401 - re-exported
from rag.store.files.search import SearchIndex

log = logging.getLogger(__name__)


FORMAT_VERSION = 2  # 2: documents.json holds each document's format, pages and headings


MANIFEST = "manifest.json"


class MissingIndexError(IndexLoadError):
    """No index has been built at that folder."""


class CorruptIndexError(IndexLoadError):
    """The index folder exists but cannot be read back."""


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


_LOCKS: dict[str, threading.Lock] = {}  # index folder -> its lock between this process's threads
#: The index folders whose lock this context holds: re-entered, not taken again, by a build that saves, and
#: by work the holder hands to a thread of its own while it waits for it (rag.runtime.priority.lowered runs
#: it in a copy of the holder's context).
_HELD: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("rag_index_locks_held", default=frozenset())


@contextlib.contextmanager
def index_lock(index_dir: Path, make_folder: bool = True):
    """Hold the index folder's write lock (an flock on `.NAME.lock` beside it): a second `rag index` of the
    same folder, in this process or another, waits for the first (saying so) instead of racing its swap.
    Without `make_folder`, the folder the lock file lies in must exist and still be there once the lock is
    held: FileNotFoundError otherwise (a collection deleted meanwhile is never made again by its lock)."""
    target = Path(index_dir).resolve()
    key = str(target)
    if key in _HELD.get():
        yield
        return
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(key, threading.Lock())
    with lock:
        if make_folder:
            target.parent.mkdir(parents=True, exist_ok=True)
        lock_file = target.with_name(f".{target.name}.lock")
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("another process is writing the index at %s: waiting for it to finish", index_dir)
                fcntl.flock(fd, fcntl.LOCK_EX)
            if not make_folder and os.fstat(fd).st_ino != _inode(lock_file):  # moved away while we waited
                raise FileNotFoundError(2, "the folder was removed", str(target.parent))
            token = _HELD.set(_HELD.get() | {key})
            try:
                yield
            finally:
                _HELD.reset(token)
        finally:
            os.close(fd)  # releases the flock


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def remove_index_folder(index_dir: Path) -> None:
    """Remove an index folder at once for every reader (moved aside, then deleted): a reader sees the whole
    index or none, never half of one."""
    target = Path(index_dir).resolve()
    aside = target.with_name(f".{target.name}.removed-{os.getpid()}-{threading.get_ident()}")
    try:
        target.rename(aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _remove_leftovers(target: Path) -> None:
    """Temporary folders of builds that were killed, and an old copy a failed swap left behind."""
    now = time.time()
    for leftover in [*target.parent.glob(f".{target.name}.tmp-*"), *target.parent.glob(f".{target.name}.removed-*")]:
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


def committed_build(index_dir: Path) -> tuple[int, int] | None:
    """Which build the folder holds (index_identity), a save's swap waited for; None when it holds none."""
    _wait_for_swap(Path(index_dir))
    return index_identity(Path(index_dir))


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
    last = READ_ATTEMPTS - 1
    for attempt in range(READ_ATTEMPTS):
        before = index_identity(Path(index_dir))
        try:
            index = _load_index(Path(index_dir))
        except IndexLoadError:
            folder = Path(index_dir).resolve()
            swapping = folder.with_name(f".{folder.name}.old").is_dir()
            if attempt == last or (index_identity(Path(index_dir)) == before and not swapping):
                raise  # missing or damaged for good, not caught mid-swap
            time.sleep(0.01 * (attempt + 1))
            continue
        if index_identity(Path(index_dir)) == before or attempt == last:
            index.docs_dir, index.path, index.identity = docs_dir, Path(index_dir), before
            return index
    raise AssertionError("unreachable")


#: How many times a read that met a save's swap is tried again (a few milliseconds apart).
READ_ATTEMPTS = 10


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
