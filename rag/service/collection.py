"""One collection: its errors (each with its HTTP status), the rules for its name and its documents' names,
its folders and settings, and the file writes an upload or delete makes (atomic, never half a file)."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rag.config import Settings
from rag.errors import RagError
from rag.ingest.converters import SUFFIXES
from rag.ingest.files import candidate_files
from rag.ingest.names import DEFAULT, NAME
from rag.pipeline.qa import Pipeline
from rag.records import Answer
from rag.store.files.index import IndexLoadError, committed_build, load_index

log = logging.getLogger(__name__)

#: Names Windows reserves (a team's files may be synced to one): refused as any part of a path.
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
EMPTY = "the collection holds no documents yet: upload one first"
#: The change under way in a collection (in its folder; `default`'s in the data folder), and the copy of
#: the file it replaces or deletes: what the next start needs to finish or undo a change cut short.
JOURNAL, BACKUP = ".journal.json", ".journal-backup"
#: A deleted collection's folder is renamed to this prefix (never a collection name) before it is removed.
DELETED = ".deleted-"
#: The longest file or folder name, in bytes, that a document's name may hold: what filesystems take (NAME_MAX).
MAX_PART_BYTES = 255


class CollectionError(RagError):
    """A collection or document request that cannot be done as asked; `status` is its HTTP status."""

    status = 422


class NotFoundError(CollectionError):
    status = 404


class ConflictError(CollectionError):
    status = 409


class TooLargeError(CollectionError):
    status = 413


class LoadingError(CollectionError):
    """A collection the server is still opening after a start (its index checked, or built): a 503 with
    Retry-After, so a client asks again instead of taking it for missing."""

    status = 503

    def __init__(self, name: str, retry_after: int) -> None:
        super().__init__(f"the collection {name!r} is still loading (its index is checked or built after the server "
                         f"started): ask again in {retry_after} s")
        self.retry_after = retry_after


def missing(name: str) -> NotFoundError:
    """The 404 of a collection that does not exist, and of one the request's key does not reach (rag.service.access):
    the same body, so a key cannot probe for other teams' names."""
    return NotFoundError(f"no collection named {name!r}")


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise CollectionError(f"a collection name is 1-64 of a-z, 0-9, '_' and '-': not {name!r}")
    return name


def safe_source(filename: str, folder: str | None = None) -> str:
    """The source an upload is stored as: the file's name (with any folders it names), under `folder` when
    given, in Unicode's composed form (NFC: `café` typed on a Mac and on Linux is one name). Refused (422):
    '..', an absolute path, control characters, hidden or reserved names, a file or folder name over
    MAX_PART_BYTES, and formats rag does not read."""
    folder = unicodedata.normalize("NFC", (folder or "").replace("\\", "/"))
    name = unicodedata.normalize("NFC", (filename or "").replace("\\", "/"))
    if name.startswith("/") or folder.startswith("/") or re.match(r"[A-Za-z]:/", name):
        raise CollectionError("an absolute path is not a document name")
    parts = [p for p in f"{folder}/{name}".split("/") if p not in ("", ".")]
    if not parts:
        raise CollectionError("the upload has no file name")
    source = "/".join(parts)
    for part in parts:
        if part in ("", "..") or part.startswith("."):
            raise CollectionError(f"{source!r} is not a document name ('..', hidden or empty parts are refused)")
        if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in part):
            raise CollectionError("a document name may not hold control or invisible format characters")
        if part.split(".")[0].lower() in RESERVED:
            raise CollectionError(f"{part!r} is a reserved name")
        if len(part.encode("utf-8")) > MAX_PART_BYTES:
            raise CollectionError(f"a file or folder name of the document is {len(part.encode('utf-8'))} bytes; "
                                  f"the limit is {MAX_PART_BYTES} (the filesystem's)")
    if len(source.encode("utf-8")) > 1024:
        raise CollectionError("the document name is longer than 1024 bytes")
    if PurePosixPath(source).suffix.lower() not in SUFFIXES:
        raise CollectionError(f"{source!r} is not a format rag reads ({', '.join(SUFFIXES)})")
    return source


def look_alike_key(path: str) -> str:
    """What a path is to a file system that ignores case and drops trailing spaces and dots (macOS and
    Windows by default, and the sync tools a team's folder may go through): two paths with one key are
    one file there. Compared on every system, so a collection never holds two names a user cannot tell apart."""
    return "/".join(unicodedata.normalize("NFC", unicodedata.normalize("NFC", part).rstrip(" .").casefold())
                    for part in path.split("/"))


def collection_settings(settings: Settings, name: str) -> Settings:
    """The settings of managed collection `name`: its folders under the data folder, and the schema its
    tables get in a PostgreSQL store ('_' doubled and '-' as '_h', so that two names never share one)."""
    folder = Path(settings.data_dir) / "collections" / check_name(name)
    schema = "rag_c_" + name.replace("_", "__").replace("-", "_h")
    if len(schema) > 63:  # PostgreSQL's limit on a name: a long collection name gets a hash of itself
        schema = "rag_c_" + hashlib.sha256(name.encode()).hexdigest()[:40]
    return settings.with_overrides(docs_dir=folder / "docs", index_dir=folder / "index", store_schema=schema)


@dataclass
class Collection:
    """One collection: its folder of documents, its settings (index folder or schema) and its pipeline
    (None while it holds no documents), answering from the committed build `build` of its index."""

    name: str
    docs_dir: Path | None
    settings: Settings
    pipeline: Pipeline | None
    managed: bool
    lock: threading.Lock = field(default_factory=threading.Lock)  # this process's writers take turns on it
    # Held to look at the committed index and to swap `pipeline` for a newer build: never while indexing.
    view: threading.Lock = field(default_factory=threading.Lock)
    build: tuple[int, int] | None = None  # which build of the index folder `pipeline` answers from
    deleted: bool = False  # set when the collection is deleted: later uploads find it gone
    loading: bool = False  # still being opened after the server started: its requests get a 503

    def counts(self) -> tuple[int, int]:
        pipeline = self.pipeline  # read once: a delete may set it to None meanwhile
        return pipeline.store.counts() if pipeline else (0, 0)

    def ask(self, question: str, top_k: int | None = None, sources: list[str] | None = None,
            timings: dict[str, float] | None = None) -> Answer:
        pipeline = self.pipeline
        if pipeline is None:
            raise ConflictError(EMPTY)
        return pipeline.run(question, top_k, timings=timings, sources=sources)

    def take_up(self, pipeline_for) -> None:
        """Answer from the collection's last committed index (a pipeline from `pipeline_for(settings, rebuild,
        index)`): its first, a newer build, or none once its last document went, whoever committed it (a writer
        here, or another worker). A stat when nothing changed; never waits for a writer, only for another
        reader loading the same build."""
        with self.view:
            if self.deleted:
                return
            if self.settings.store:  # PostgreSQL: every read sees what is committed, as it commits
                if self.pipeline is None and self.has_files():
                    try:
                        self.pipeline = pipeline_for(self.settings, rebuild=False)
                    except RagError as err:  # its first upload is not committed yet
                        log.debug("collection %s not readable yet: %s", self.name, err)
                elif self.pipeline is not None and not self.has_files():
                    drop_view(self)
                return
            build = committed_build(self.settings.index_dir)
            if build == self.build:
                return
            if build is None:  # its last document was deleted (by another worker: here the view went with it)
                drop_view(self)
                return
            try:
                index = load_index(self.settings.index_dir, self.docs_dir)
            except IndexLoadError as err:
                log.warning("collection %s: its new index cannot be read (%s): answering from the one before",
                            self.name, err)
                return
            previous, self.pipeline = self.pipeline, pipeline_for(self.settings, False, index)
            self.build = index.identity
            if previous is not None:
                previous.close()

    def documents(self) -> list[dict]:
        """Each indexed document: source, format, bytes (None when its file is not on this machine), passages."""
        pipeline = self.pipeline  # read once: a delete may set it to None meanwhile
        stats = pipeline.store.document_stats() if pipeline is not None else {}
        rows = []
        for source, (fmt, passages) in sorted(stats.items()):
            path = self.docs_dir / source if self.docs_dir else None
            size = path.stat().st_size if path is not None and path.is_file() else None
            rows.append({"source": source, "format": fmt, "bytes": size, "passages": passages})
        return rows

    def check_target(self, source: str, replace: bool) -> None:
        """ConflictError unless an upload may be stored as `source`: no file or folder in its way, no name it
        would be one with elsewhere (look_alike), and an existing file only when replacing."""
        target = self.docs_dir / source
        if target.is_dir() or any(p.is_file() for p in target.parents if self.docs_dir in p.parents):
            raise ConflictError(f"{source} clashes with a folder or file of the same name in {self.name}")
        other = look_alike(self.docs_dir, source)
        if other is not None:
            raise ConflictError(f"{source!r} differs from {other!r} in {self.name} only by case, trailing spaces "
                                "or dots, or how its accents are encoded (one file on many systems): replace "
                                f"{other!r} under its own name, or choose another")
        if target.exists() and not replace:
            raise ConflictError(f"{source} exists in {self.name}; send ?replace=true to replace it")

    def journal(self, data_dir: Path) -> tuple[Path, Path]:
        """Where a change under way is written down, and the copy of the file it replaces (`default`'s in
        the server's data folder)."""
        folder = self.docs_dir.parent if self.managed else Path(data_dir)
        prefix = "" if self.managed else ".default"
        return folder / f"{prefix}{JOURNAL}", folder / f"{prefix}{BACKUP}"

    def needs_start_work(self) -> bool:
        """Whether opening this managed collection at a start takes more than loading its index: a change to
        finish or undo (its journal), or an index to build or bring up to date (a PostgreSQL store's, always)."""
        from rag.store.files.index import needs_indexing

        if (self.docs_dir.parent / JOURNAL).exists():
            return True
        return self.has_files() and (bool(self.settings.store) or needs_indexing(self.settings))

    def has_files(self) -> bool:
        """Whether its folder holds a file to index (False for a folder removed meanwhile)."""
        try:
            return self.docs_dir is not None and self.docs_dir.is_dir() and bool(candidate_files(self.docs_dir)[0])
        except OSError:
            return False


def found_at_start(root: Path) -> list[str]:
    """The managed collections under `root` at a start; a delete a kill stopped before it was done is finished."""
    names = []
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        if folder.name.startswith(DELETED):
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.is_dir() and NAME.fullmatch(folder.name) and folder.name != DEFAULT:
            names.append(folder.name)
    return names


def build_of(pipeline: Pipeline) -> tuple[int, int] | None:
    """Which build of its index folder a pipeline answers from (None for a database store)."""
    index = getattr(pipeline.store, "index", None)
    return getattr(index, "identity", None)


def drop_view(collection: Collection) -> None:
    """Stop answering from a collection's index (it has none now): called holding its `view` lock."""
    previous, collection.pipeline, collection.build = collection.pipeline, None, None
    if previous is not None:
        previous.close()


def look_alike(docs_dir: Path, source: str) -> str | None:
    """A file or folder of the collection that `source` (or a folder of it) would be one with on a file
    system that ignores case, trailing spaces or the encoding of accents (look_alike_key), if any."""
    parts = source.split("/")
    wanted = {look_alike_key("/".join(parts[: i + 1])): "/".join(parts[: i + 1]) for i in range(len(parts))}
    for path in docs_dir.rglob("*"):
        name = path.relative_to(docs_dir).as_posix()
        if any(part.startswith(".") for part in name.split("/")):
            continue
        mine = wanted.get(look_alike_key(name))
        if mine is not None and mine != name:
            return name
    return None


def keep_copy(path: Path, copy: Path) -> None:
    """A copy of the file, as a second name of it where the file system allows (no bytes copied)."""
    try:
        os.link(path, copy)
    except OSError:
        shutil.copy2(path, copy)


def prune_folders(docs_dir: Path, path: Path) -> None:
    """Remove the folders above `path` that are left empty (not the collection's own folder)."""
    for folder in path.parents:
        if folder == docs_dir or docs_dir not in folder.parents:
            break
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break


def write_atomically(path: Path, data: bytes) -> None:
    """Write beside the file, then rename over it: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
