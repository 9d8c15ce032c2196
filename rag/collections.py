"""Collections: named sets of documents, each with its own index, that a server shares with a team. Managed
ones live under DATA/collections/NAME/ (docs/ holds the files, index/ the file index, or a PostgreSQL
schema of their own); the --docs/--index corpus is the collection named `default`. An upload or delete
updates the collection's index incrementally and swaps it in between questions; uploads of one collection
take turns, and the models are shared by all collections (one copy per process)."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rag.config import Settings
from rag.converters import SUFFIXES, ConversionError, ConvertOptions, ExpansionError, convert
from rag.errors import RagError
from rag.pipeline import Pipeline
from rag.store import drop_store, index_store
from rag.types import Answer, Document

log = logging.getLogger(__name__)

DEFAULT = "default"
NAME = re.compile(r"[a-z0-9_-]{1,64}")
#: Names Windows reserves (a team's files may be synced to one): refused as any part of a path.
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
EMPTY = "the collection holds no documents yet: upload one first"


class CollectionError(RagError):
    """A collection or document request that cannot be done as asked; `status` is its HTTP status."""

    status = 422


class NotFoundError(CollectionError):
    status = 404


class ConflictError(CollectionError):
    status = 409


class TooLargeError(CollectionError):
    status = 413


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise CollectionError(f"a collection name is 1-64 of a-z, 0-9, '_' and '-': not {name!r}")
    return name


def safe_source(filename: str, folder: str | None = None) -> str:
    """The source an upload is stored as: the file's name (with any folders it names), under `folder` when
    given. Refused (422): '..', an absolute path, control characters, hidden or reserved names, and formats
    rag does not read."""
    folder, name = (folder or "").replace("\\", "/"), (filename or "").replace("\\", "/")
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
    if len(source.encode("utf-8")) > 1024:
        raise CollectionError("the document name is longer than 1024 bytes")
    if PurePosixPath(source).suffix.lower() not in SUFFIXES:
        raise CollectionError(f"{source!r} is not a format rag reads ({', '.join(SUFFIXES)})")
    return source


def collection_settings(settings: Settings, name: str) -> Settings:
    """The settings of managed collection `name`: its folders under the data folder, and the schema its
    tables get in a PostgreSQL store ('_' doubled and '-' as '_h', so that two names never share one)."""
    folder = Path(settings.data_dir) / "collections" / check_name(name)
    schema = "rag_c_" + name.replace("_", "__").replace("-", "_h")
    if len(schema) > 63:  # PostgreSQL's limit on a name: a long collection name gets a hash of itself
        schema = "rag_c_" + hashlib.sha256(name.encode()).hexdigest()[:40]
    return settings.with_overrides(docs_dir=folder / "docs", index_dir=folder / "index", store_schema=schema)


class LockedEmbedder:
    """The shared embedder, used under the models' lock: an upload's indexing embeds between questions, in
    turns of about `turn_seconds` (the batch sized from how fast the last one went), so a question waits
    for one turn of an upload, never for the whole file, whatever the CPU."""

    FIRST, MOST = 8, 256  # passages in the first turn, and in any

    def __init__(self, embedder, lock, turn_seconds: float = Settings.indexing_turn_seconds) -> None:
        self._embedder, self._lock, self.turn_seconds = embedder, lock, turn_seconds

    def run(self, texts, progress: bool = False):
        import numpy as np

        if not texts:
            with self._lock:
                return self._embedder.run(texts, progress=False)
        parts, done, size = [], 0, self.FIRST
        while done < len(texts):
            with self._lock:
                started = time.perf_counter()
                parts.append(self._embedder.run(texts[done : done + size], progress=False))
                took = time.perf_counter() - started
            done += size
            fits = int(size * self.turn_seconds / max(took, 1e-3))
            size = max(1, min(self.MOST, 2 * size, fits))  # never more than doubled at once
        return np.vstack(parts)

    def __getattr__(self, name: str):
        return getattr(self._embedder, name)


@dataclass
class Collection:
    """One collection: its folder of documents, its settings (index folder or schema) and its pipeline
    (None while it holds no documents)."""

    name: str
    docs_dir: Path | None
    settings: Settings
    pipeline: Pipeline | None
    managed: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    deleted: bool = False  # set under `lock` when the collection is deleted: later uploads find it gone

    def counts(self) -> tuple[int, int]:
        pipeline = self.pipeline  # read once: a delete may set it to None meanwhile
        return pipeline.retriever.store.counts() if pipeline else (0, 0)

    def ask(self, question: str, top_k: int | None = None, sources: list[str] | None = None,
            timings: dict[str, float] | None = None) -> Answer:
        pipeline = self.pipeline
        if pipeline is None:
            raise ConflictError(EMPTY)
        return pipeline.run(question, top_k, timings=timings, sources=sources)

    def has_files(self) -> bool:
        return self.docs_dir is not None and self.docs_dir.is_dir() and any(p.is_file() for p in self.docs_dir.rglob("*"))


class Collections:
    """Every collection of a server: `default` (the pipeline it started with) and the managed ones found
    under settings.data_dir/collections, opened at start-up."""

    def __init__(self, settings: Settings, default: Pipeline, writable_default: bool = False) -> None:
        self.settings = settings
        self.writable_default = writable_default  # may uploads and deletes change the --docs folder?
        self.root = Path(settings.data_dir) / "collections"
        self.default = default
        self._models_lock = default._lock  # every collection shares the default's models, so their lock
        self._all: dict[str, Collection] = {
            DEFAULT: Collection(DEFAULT, default.retriever.store.docs_dir, settings, default, managed=False)}
        self._guard = threading.Lock()
        if self.root.is_dir():
            for folder in sorted(self.root.iterdir()):
                if folder.is_dir() and NAME.fullmatch(folder.name) and folder.name != DEFAULT:
                    try:
                        self._all[folder.name] = self._open(folder.name)
                    except RagError as err:
                        log.error("collection %s cannot be opened: %s", folder.name, err)

    # -- collections -------------------------------------------------------------------------------------

    def _open(self, name: str) -> Collection:
        settings = collection_settings(self.settings, name)
        collection = Collection(name, settings.docs_dir, settings, None, managed=True)
        if collection.has_files():
            collection.pipeline = self._pipeline(settings, rebuild=True)
        return collection

    def _pipeline(self, settings: Settings, rebuild: bool) -> Pipeline:
        """A pipeline on the shared models; it takes the models' lock itself while it answers (so its
        embedder is the plain one: the locked one is for indexing, which runs outside that lock)."""
        d = self.default
        return Pipeline.from_settings(settings, rebuild=rebuild, embedder=d.retriever.embedder, reader=d.reader,
                                      lock=self._models_lock)

    def names(self) -> list[str]:
        """Every collection, those another worker process made or deleted since included."""
        on_disk = {f.name for f in self.root.iterdir() if f.is_dir() and NAME.fullmatch(f.name)} if self.root.is_dir() else set()
        for name in on_disk - set(self._all) - {DEFAULT}:
            self._adopt(name)
        with self._guard:
            for gone in [n for n in self._all if n != DEFAULT and n not in on_disk]:
                self._all.pop(gone)
            return sorted(self._all)

    def get(self, name: str) -> Collection:
        """The collection as it stands on disk: made, filled, re-indexed or deleted by this process or by
        another worker of the same server (`rag serve --workers N`: one stat per request)."""
        with self._guard:
            found = self._all.get(name)
        if name != DEFAULT:
            folder = self.root / name
            if found is None and folder.is_dir() and NAME.fullmatch(name):
                found = self._adopt(name)
            elif found is not None and found.managed and not folder.is_dir():
                with self._guard:  # deleted by another worker
                    self._all.pop(name, None)
                found = None
            elif found is not None and found.managed:
                self._sync(found)
        if found is None:
            raise NotFoundError(f"no collection named {name!r}")
        return found

    def _adopt(self, name: str) -> Collection | None:
        """A collection another worker made: opened here too."""
        try:
            collection = self._open(name)
        except RagError as err:
            log.error("collection %s cannot be opened: %s", name, err)
            return None
        with self._guard:
            return self._all.setdefault(name, collection)

    def _sync(self, collection: Collection) -> None:
        """Take up what another worker did to a collection: its first documents, or a new build of its index."""
        with collection.lock:
            if collection.deleted:
                return
            if collection.pipeline is None:
                if collection.has_files():
                    collection.pipeline = self._pipeline(collection.settings, rebuild=True)
            else:
                collection.pipeline.refresh()

    def create(self, name: str) -> tuple[Collection, bool]:
        """The collection `name`, made (empty) if it does not exist; True when it was made."""
        check_name(name)
        if name not in self._all and (self.root / name).is_dir():  # made by another worker
            self._adopt(name)
        with self._guard:
            if name in self._all:
                return self._all[name], False
            settings = collection_settings(self.settings, name)
            settings.docs_dir.mkdir(parents=True, exist_ok=True)
            collection = self._all[name] = Collection(name, settings.docs_dir, settings, None, managed=True)
            return collection, True

    def delete(self, name: str) -> None:
        if name == DEFAULT:
            raise ConflictError("the default collection cannot be deleted")
        collection = self.get(name)
        with self._guard:  # gone from the list first: a PUT meanwhile makes a new one
            self._all.pop(name, None)
        with collection.lock:
            collection.deleted = True
            _discard_index(collection)
            shutil.rmtree(self.root / name, ignore_errors=True)

    def close(self) -> None:
        for name in self.names():
            c = self._all.get(name)
            if c is not None and c.managed and c.pipeline is not None:
                c.pipeline.close()

    # -- documents ---------------------------------------------------------------------------------------

    def documents(self, name: str) -> list[dict]:
        collection = self.get(name)
        pipeline = collection.pipeline  # read once: a delete may set it to None meanwhile
        if pipeline is None:
            return []
        stats = pipeline.retriever.store.document_stats()
        rows = []
        for source, (fmt, passages) in sorted(stats.items()):
            path = collection.docs_dir / source if collection.docs_dir else None
            size = path.stat().st_size if path is not None and path.is_file() else None
            rows.append({"source": source, "format": fmt, "bytes": size, "passages": passages})
        return rows

    def upload(self, name: str, filename: str, data: bytes, folder: str | None = None, replace: bool = False) -> dict:
        """Store a file in the collection and index it (answerable once this returns). Nothing is stored when
        it cannot be converted or would expand past a document's bounds (converted once: the index takes
        that conversion); a failed index leaves the previous file and index as they were."""
        collection = self.get(name)
        source = safe_source(filename, folder)
        if len(data) > self.settings.max_file_bytes:
            raise TooLargeError(f"the file is {len(data):,} bytes; the limit is {self.settings.max_file_bytes:,}")
        try:
            converted = convert(PurePosixPath(source).suffix, data, ConvertOptions.from_settings(self.settings))
        except ExpansionError as err:
            raise TooLargeError(f"{source}: {err}") from None
        except ConversionError as err:
            raise CollectionError(f"{source}: {err}") from None
        if not converted.text.strip():
            raise CollectionError(f"{source}: it holds no text")
        document = Document(source, converted.text, converted.format, converted.pages, converted.headings,
                            converted.ocr_pages)
        with collection.lock:
            self._check_writable(collection)
            target = collection.docs_dir / source
            if target.is_dir() or any(p.is_file() for p in target.parents if collection.docs_dir in p.parents):
                raise ConflictError(f"{source} clashes with a folder or file of the same name in {name}")
            if target.exists() and not replace:
                raise ConflictError(f"{source} exists in {name}; send ?replace=true to replace it")
            previous = target.read_bytes() if target.exists() else None
            _write_atomically(target, data)
            try:
                self._reindex(collection, {source: (hashlib.sha256(data).hexdigest(), document)})
            except BaseException:
                if previous is None:
                    target.unlink(missing_ok=True)
                else:
                    _write_atomically(target, previous)
                raise
            passages = collection.pipeline.retriever.store.document_stats().get(source, (converted.format, 0))[1]
        return {"source": source, "format": converted.format, "passages": passages}

    def remove(self, name: str, source: str) -> None:
        collection = self.get(name)
        with collection.lock:
            self._check_writable(collection)
            if collection.pipeline is None or source not in collection.pipeline.documents:
                raise NotFoundError(f"no document {source!r} in {name}")
            path = collection.docs_dir / source
            saved = path.read_bytes() if path.is_file() else None
            path.unlink(missing_ok=True)
            try:
                self._reindex(collection)
            except BaseException:
                if saved is not None:
                    _write_atomically(path, saved)
                raise
            for folder in path.parents:  # folders the delete left empty go too (not the collection's own)
                if folder == collection.docs_dir or collection.docs_dir not in folder.parents or any(folder.iterdir()):
                    break
                folder.rmdir()

    def _check_writable(self, collection: Collection) -> None:
        """Called under the collection's lock: a deleted collection is gone, and `default` (the --docs
        folder: the user's own files) changes only with --writable-default."""
        if collection.deleted:
            raise NotFoundError(f"no collection named {collection.name!r}")
        if not collection.managed and not self.writable_default:
            raise ConflictError("the default collection is the --docs folder, which the server does not change "
                                "(start it with --writable-default to allow that); create a collection for uploads")
        if collection.docs_dir is None:
            raise ConflictError("the default collection's documents folder is not on this machine")

    def _reindex(self, collection: Collection, converted: dict[str, tuple[str, Document]] | None = None) -> None:
        """Index the collection's folder incrementally (added, changed, removed) and swap the result in; the
        files in `converted` (source -> (hash, document)) are not converted again."""
        if not collection.has_files() and collection.managed:  # the last document went: an empty collection again
            _discard_index(collection)
            return
        embedder = LockedEmbedder(self.default.retriever.embedder, self._models_lock, self.settings.indexing_turn_seconds)
        index_store(collection.settings, embedder, progress=False, converted=converted)
        if collection.pipeline is None:
            collection.pipeline = self._pipeline(collection.settings, rebuild=False)
        else:
            collection.pipeline.refresh()


def _discard_index(collection: Collection) -> None:
    """Close a managed collection's pipeline and remove its index: the folder, or its PostgreSQL schema."""
    if collection.pipeline is not None:
        collection.pipeline.close()
    collection.pipeline = None
    drop_store(collection.settings)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write beside the file, then rename over it: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
