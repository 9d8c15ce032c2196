"""Collections: named sets of documents, each with its own index, that a server shares with a team. Managed
ones live under DATA/collections/NAME/ (docs/ holds the files, index/ the file index, or a PostgreSQL
schema of their own); the --docs/--index corpus is the collection named `default`. An upload or delete
updates the collection's index incrementally and swaps it in between questions; uploads of one collection
take turns, and the models are shared by all collections (one copy per process).

Readers never wait for a writer: a question, a listing or a scrape answers from the collection's last
committed index (a stat per request finds a newer one, made here or by another worker, and loads it),
while an upload builds the next one beside it. Writers take turns per collection, in this process (a
lock) and across worker processes (the index folder's flock), and journal each change (`.journal.json`
in the collection's folder) so that a change a kill cut short is finished (a delete) or undone (an
upload) when the server starts again. A deleted collection's folder is renamed away in one step before it
is removed, so no listing meets it half-deleted and nothing makes it again."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import threading
import unicodedata
from pathlib import Path, PurePosixPath

from rag.config import Settings
from rag.errors import RagError
from rag.ingest.converters import ConversionError, ConvertOptions, ExpansionError, convert
from rag.ingest.names import DEFAULT, NAME
from rag.pipeline.models import LockedEmbedder
from rag.pipeline.qa import Pipeline
from rag.records import Document
from rag.service.collection import (
    Collection,
    CollectionError,
    ConflictError,
    NotFoundError,
    TooLargeError,
    build_of,
    check_name,
    collection_settings,
    drop_view,
    look_alike,
    missing,
    safe_source,
)
from rag.service.journal import journaled_change, recover
from rag.store import drop_store, index_store
from rag.store.files.index import IndexLoadError, committed_build, index_lock, load_index

log = logging.getLogger(__name__)

#: The change under way in a collection (in its folder; `default`'s in the data folder), and the copy of
#: the file it replaces or deletes: what the next start needs to finish or undo a change cut short.
JOURNAL, BACKUP = ".journal.json", ".journal-backup"
#: A deleted collection's folder is renamed to this prefix (never a collection name) before it is removed.
DELETED = ".deleted-"


class Collections:
    """Every collection of a server: `default` (the pipeline it started with) and the managed ones found
    under settings.data_dir/collections, opened at start-up (where a change a kill cut short is finished
    or undone first)."""

    def __init__(self, settings: Settings, default: Pipeline, writable_default: bool = False) -> None:
        self.settings = settings
        self.writable_default = writable_default  # may uploads and deletes change the --docs folder?
        self.root = Path(settings.data_dir) / "collections"
        self.default = default
        self._models_lock = default.lock  # every collection shares the default's models, so their lock
        self._all: dict[str, Collection] = {
            DEFAULT: Collection(DEFAULT, default.store.docs_dir, settings, default, managed=False)}
        self._guard = threading.Lock()
        if self._journal(self._all[DEFAULT])[0].exists():
            with self._turn(self._all[DEFAULT]):
                self._recover(self._all[DEFAULT])
        if self.root.is_dir():
            for folder in sorted(self.root.iterdir()):
                if folder.name.startswith(DELETED):  # a delete that a kill stopped before it was done
                    shutil.rmtree(folder, ignore_errors=True)
                elif folder.is_dir() and NAME.fullmatch(folder.name) and folder.name != DEFAULT:
                    try:
                        self._all[folder.name] = self._open(folder.name, starting=True)
                    except NotFoundError:
                        pass  # deleted by another worker meanwhile
                    except RagError as err:
                        log.error("collection %s cannot be opened: %s", folder.name, err)

    # -- collections -------------------------------------------------------------------------------------

    def _open(self, name: str, starting: bool = False) -> Collection:
        """A managed collection as it is on disk. At start-up a change cut short is finished or undone, and
        files added while the server was down are indexed; otherwise (one another worker made) its
        committed index is loaded as it is."""
        settings = collection_settings(self.settings, name)
        collection = Collection(name, settings.docs_dir, settings, None, managed=True)
        if not starting:
            self._take_up(collection)
            return collection
        with self._turn(collection, take_up=False):
            self._recover(collection)
            if collection.pipeline is None and collection.has_files():
                pipeline = self._pipeline(settings, rebuild=True)
                with collection.view:
                    collection.pipeline, collection.build = pipeline, build_of(pipeline)
        return collection

    def _pipeline(self, settings: Settings, rebuild: bool, index=None) -> Pipeline:
        """A pipeline on the shared models (on `index` when given); it takes the models' lock itself while
        it answers (so its embedder is the plain one: the locked one is for indexing, which runs outside
        that lock)."""
        d = self.default
        return Pipeline.from_settings(settings, rebuild=rebuild, index=index, embedder=d.embedder,
                                      reader=d.reader, lock=self._models_lock)

    def names(self) -> list[str]:
        """Every collection, those another worker process made or deleted since included."""
        try:
            entries = list(self.root.iterdir()) if self.root.is_dir() else []
        except FileNotFoundError:
            entries = []
        on_disk = {f.name for f in entries if NAME.fullmatch(f.name) and f.name != DEFAULT and f.is_dir()}
        for name in on_disk - set(self._all):
            self._adopt(name)
        with self._guard:
            for gone in [n for n in self._all if n != DEFAULT and n not in on_disk]:
                self._all.pop(gone)
            return sorted(self._all)

    def listing(self) -> list[tuple[str, int, int]]:
        """(name, documents, passages) of every collection; one deleted while it is listed is left out."""
        rows = []
        for name in self.names():
            try:
                rows.append((name, *self.get(name).counts()))
            except NotFoundError:
                continue
        return rows

    def get(self, name: str) -> Collection:
        """The collection as last committed on disk: made, filled, re-indexed or deleted by this process or
        by another worker of the same server (`rag serve --workers N`: one stat per request). Never waits
        for an upload or delete under way."""
        with self._guard:
            found = self._all.get(name)
        if name != DEFAULT:
            folder = self.root / name
            if found is None and NAME.fullmatch(name) and folder.is_dir():
                found = self._adopt(name)
            elif found is not None and not folder.is_dir():  # deleted by another worker
                with self._guard:
                    if self._all.get(name) is found:
                        self._all.pop(name)
                found = None
            elif found is not None:
                self._take_up(found)
        if found is None:
            raise missing(name)
        return found

    def _adopt(self, name: str) -> Collection | None:
        """A collection another worker made: opened here too."""
        try:
            collection = self._open(name)
        except (RagError, OSError) as err:
            log.error("collection %s cannot be opened: %s", name, err)
            return None
        with self._guard:
            return self._all.setdefault(name, collection)

    def _take_up(self, collection: Collection) -> None:
        """Answer from the collection's last committed index: its first, a newer build, or none once its last
        document went, whoever committed it (a writer here, or another worker). A stat when nothing changed;
        never waits for a writer, only for another reader loading the same build."""
        with collection.view:
            if collection.deleted:
                return
            if collection.settings.store:  # PostgreSQL: every read sees what is committed, as it commits
                if collection.pipeline is None and collection.has_files():
                    try:
                        collection.pipeline = self._pipeline(collection.settings, rebuild=False)
                    except RagError as err:  # its first upload is not committed yet
                        log.debug("collection %s not readable yet: %s", collection.name, err)
                elif collection.pipeline is not None and not collection.has_files():
                    drop_view(collection)
                return
            build = committed_build(collection.settings.index_dir)
            if build == collection.build:
                return
            if build is None:  # its last document was deleted (by another worker: here the view went with it)
                drop_view(collection)
                return
            try:
                index = load_index(collection.settings.index_dir, collection.docs_dir)
            except IndexLoadError as err:
                log.warning("collection %s: its new index cannot be read (%s): answering from the one before",
                            collection.name, err)
                return
            previous, collection.pipeline = collection.pipeline, self._pipeline(collection.settings, False, index)
            collection.build = index.identity
            if previous is not None:
                previous.close()

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
        """Delete a collection: its folder is renamed away in one step (no listing, here or in another
        worker, sees it from then on, nor half of it), then removed with its index."""
        if name == DEFAULT:
            raise ConflictError("the default collection cannot be deleted")
        collection = self.get(name)
        with self._writing(collection):
            gone = self.root / f"{DELETED}{name}-{secrets.token_hex(4)}"
            os.rename(self.root / name, gone)
            with self._guard:
                if self._all.get(name) is collection:
                    self._all.pop(name)
            with collection.view:
                collection.deleted = True
                drop_view(collection)
            if collection.settings.store:
                drop_store(collection.settings)  # its PostgreSQL schema
        shutil.rmtree(gone, ignore_errors=True)

    def close(self) -> None:
        with self._guard:
            collections = list(self._all.values())
        for c in collections:
            if c.managed and c.pipeline is not None:
                c.pipeline.close()

    # -- documents ---------------------------------------------------------------------------------------

    def documents(self, name: str) -> list[dict]:
        collection = self.get(name)
        pipeline = collection.pipeline  # read once: a delete may set it to None meanwhile
        if pipeline is None:
            return []
        stats = pipeline.store.document_stats()
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
        with self._writing(collection):
            target = collection.docs_dir / source
            if target.is_dir() or any(p.is_file() for p in target.parents if collection.docs_dir in p.parents):
                raise ConflictError(f"{source} clashes with a folder or file of the same name in {name}")
            other = look_alike(collection.docs_dir, source)
            if other is not None:
                raise ConflictError(f"{source!r} differs from {other!r} in {name} only by case, trailing spaces "
                                    "or dots, or how its accents are encoded (one file on many systems): replace "
                                    f"{other!r} under its own name, or choose another")
            if target.exists() and not replace:
                raise ConflictError(f"{source} exists in {name}; send ?replace=true to replace it")
            self._change(collection, "upload", source, data,
                         {source: (hashlib.sha256(data).hexdigest(), document)})
            passages = collection.pipeline.store.document_stats().get(source, (converted.format, 0))[1]
        return {"source": source, "format": converted.format, "passages": passages}

    def remove(self, name: str, source: str) -> None:
        collection = self.get(name)
        with self._writing(collection):
            documents = collection.pipeline.documents if collection.pipeline is not None else {}
            if source not in documents:
                source = unicodedata.normalize("NFC", source)  # as uploads store names
            if source not in documents:
                raise NotFoundError(f"no document {source!r} in {name}")
            self._change(collection, "delete", source)

    def sync_folder(self, name: str, hold=None) -> bool:
        """Index a collection's folder as it stands now, if it differs from the index (a watched folder's
        batch: rag.service.watch), files `hold` is true for kept as indexed; False when there was nothing to do.
        In the collection's turn, like an upload, so writers take turns; what another worker synced first is
        taken up by the turn, which leaves nothing to do here."""
        from rag.store.files.index import needs_indexing

        collection = self.get(name)
        if collection.docs_dir is None:
            return False
        try:
            with self._turn(collection):
                if collection.pipeline is None and not collection.has_files():
                    return False
                settings = collection.settings.with_overrides(docs_dir=collection.docs_dir)
                if collection.pipeline is not None and not needs_indexing(settings):
                    return False
                self._reindex(collection, hold=hold)
        except NotFoundError:  # deleted meanwhile: nothing left to keep in step
            return False
        return True

    # -- changes -----------------------------------------------------------------------------------------

    def _journal(self, collection: Collection) -> tuple[Path, Path]:
        """Where a collection's change under way is written down, and the copy of the file it replaces."""
        folder = collection.docs_dir.parent if collection.managed else Path(self.settings.data_dir)
        prefix = "" if collection.managed else ".default"
        return folder / f"{prefix}{JOURNAL}", folder / f"{prefix}{BACKUP}"

    @contextlib.contextmanager
    def _turn(self, collection: Collection, take_up: bool = True):
        """A collection's turn to change: after this process's other writers (its lock) and other workers'
        (the index folder's flock, taken without making the folder: NotFoundError once it is deleted; none
        for `default` on a PostgreSQL store, which has no index folder). What other writers committed
        meanwhile is taken up first, unless not `take_up`."""
        with collection.lock, contextlib.ExitStack() as stack:
            if collection.deleted:
                raise missing(collection.name)
            if collection.managed or not collection.settings.store:
                try:
                    stack.enter_context(index_lock(collection.settings.index_dir, make_folder=not collection.managed))
                except FileNotFoundError:
                    raise missing(collection.name) from None
            if collection.managed and take_up:
                self._take_up(collection)
            yield

    @contextlib.contextmanager
    def _writing(self, collection: Collection):
        """The collection's turn, for a request that changes it: refused for a deleted collection, and for
        `default` (the --docs folder: the user's own files) unless --writable-default."""
        with self._turn(collection):
            if not collection.managed and not self.writable_default:
                raise ConflictError("the default collection is the --docs folder, which the server does not change "
                                    "(start it with --writable-default to allow that); create a collection for uploads")
            if collection.docs_dir is None:
                raise ConflictError("the default collection's documents folder is not on this machine")
            yield

    def _change(self, collection: Collection, op: str, source: str, data: bytes | None = None,
                converted: dict[str, tuple[str, Document]] | None = None) -> None:
        """Store or delete the file `source` and re-index, in the collection's turn, journaled (rag.service.journal)."""
        journaled_change(collection, *self._journal(collection), op, source, data,
                         lambda: self._reindex(collection, converted))

    def _recover(self, collection: Collection) -> None:
        """Finish or undo the change a kill cut short (rag.service.journal), in the collection's turn."""
        recover(collection, *self._journal(collection), lambda: self._reindex(collection))

    def _reindex(self, collection: Collection, converted: dict[str, tuple[str, Document]] | None = None,
                 hold=None) -> None:
        """Index the collection's folder incrementally (added, changed, removed) and swap the result in;
        sources `hold` is true for stay as indexed (a watched folder: rag.service.watch)."""
        if collection.managed and not collection.has_files():  # the last document went: an empty collection again
            drop_store(collection.settings)
            with collection.view:
                drop_view(collection)
            return
        embedder = LockedEmbedder(self.default.embedder, self._models_lock, self.settings.indexing_turn_seconds)
        index_store(collection.settings, embedder, progress=False, converted=converted, hold=hold)
        if collection.managed:
            self._take_up(collection)
        else:
            collection.pipeline.refresh()


