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
from rag.ingest.converters import ConversionError, ConvertOptions, ExpansionError
from rag.ingest.converters.apart import convert_upload
from rag.ingest.names import DEFAULT, NAME
from rag.pipeline.models import LockedEmbedder
from rag.pipeline.qa import Pipeline
from rag.records import Document
from rag.runtime.priority import lowered
from rag.service.collection import (
    DELETED,
    Collection,
    CollectionError,
    ConflictError,
    LoadingError,
    NotFoundError,
    TooLargeError,
    check_name,
    collection_settings,
    drop_view,
    found_at_start,
    missing,
    safe_source,
)
from rag.service.journal import journaled_change, recover
from rag.store import drop_store, index_store
from rag.store.files.index import index_lock

log = logging.getLogger(__name__)



class Collections:
    """Every collection of a server: `default` (the pipeline it started with) and the managed ones found
    under settings.data_dir/collections, opened at start-up (where a change a kill cut short is finished
    or undone first)."""

    def __init__(self, settings: Settings, default: Pipeline, writable_default: bool = False,
                 background: bool = False) -> None:
        self.settings = settings
        self.writable_default = writable_default  # may uploads and deletes change the --docs folder?
        self.root = Path(settings.data_dir) / "collections"
        self.default = default
        self._models_lock = default.lock  # every collection shares the default's models, so their lock
        self._all: dict[str, Collection] = {
            DEFAULT: Collection(DEFAULT, default.store.docs_dir, settings, default, managed=False)}
        self._guard = threading.Lock()
        self._stopping = False
        self.loaded = threading.Event()  # set once every collection found at start-up is open
        names = found_at_start(self.root)
        if not background:
            self._load(names)
            return
        # The server answers meanwhile: each collection still loading is a 503 with Retry-After.
        self._all[DEFAULT].loading = self._all[DEFAULT].journal(self.settings.data_dir)[0].exists()
        for name in names:
            self._all[name] = self._placeholder(name, loading=True)
        threading.Thread(target=self._load, args=(names,), name="rag-collections-loading", daemon=True).start()

    def _load(self, names: list[str]) -> None:
        """Open the collections found at start-up, a change a kill cut short finished or undone first: those
        whose committed index is up to date first, then those to build (files added while the server was
        down, a change to finish), so that one long build keeps no other collection waiting."""
        try:
            default = self._all[DEFAULT]
            try:
                if default.journal(self.settings.data_dir)[0].exists():
                    with self._turn(default):
                        self._recover(default)
            except (RagError, OSError) as err:  # answered from its index as it is; the next start tries again
                log.error("the default collection's change cut short by a kill cannot be finished: %s", err)
            finally:
                default.loading = False
            ready = [n for n in names if not self._placeholder(n).needs_start_work()]
            for name in ready + [n for n in names if n not in ready]:
                if self._stopping:
                    return
                try:
                    opened = self._open(name, starting=True)
                except NotFoundError:  # deleted by another worker meanwhile
                    opened = None
                except RagError as err:
                    log.error("collection %s cannot be opened: %s", name, err)
                    opened = None
                with self._guard:
                    if name not in self._all or self._all[name].loading:
                        if opened is None:
                            self._all.pop(name, None)
                        else:
                            self._all[name] = opened
        finally:
            self.loaded.set()

    def _placeholder(self, name: str, loading: bool = False) -> Collection:
        """Managed collection `name` with nothing loaded."""
        settings = collection_settings(self.settings, name)
        return Collection(name, settings.docs_dir, settings, None, managed=True, loading=loading)

    def loading(self) -> list[str]:
        """The collections still loading after the start (their requests get a 503 with Retry-After)."""
        with self._guard:
            return sorted(n for n, c in self._all.items() if c.loading)

    def _loading_error(self, name: str) -> LoadingError:
        return LoadingError(name, self.settings.loading_retry_seconds)

    # -- collections -------------------------------------------------------------------------------------

    def _open(self, name: str, starting: bool = False) -> Collection:
        """A managed collection as it is on disk. At start-up a change cut short is finished or undone, and
        files added while the server was down are indexed; otherwise (one another worker made) its
        committed index is loaded as it is."""
        collection = self._placeholder(name)
        if not starting:
            self._take_up(collection)
            return collection
        with self._turn(collection, take_up=False):
            self._recover(collection)
            if collection.pipeline is None and collection.has_files():
                if collection.needs_start_work():
                    self._reindex(collection)  # in turns with questions, at a lower priority
                else:
                    self._take_up(collection)
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

    def listing(self) -> list[tuple[str, int, int, bool]]:
        """(name, documents, passages, loading) of every collection (0 and 0 while it loads); one deleted while
        it is listed is left out."""
        rows = []
        for name in self.names():
            try:
                rows.append((name, *self.get(name).counts(), False))
            except LoadingError:
                rows.append((name, 0, 0, True))
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
            elif found is not None and not found.loading:
                self._take_up(found)
        if found is None:
            raise missing(name)
        if found.loading:
            raise self._loading_error(name)
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
        collection.take_up(self._pipeline)

    def create(self, name: str) -> tuple[Collection, bool]:
        """The collection `name`, made (empty) if it does not exist; True when it was made."""
        check_name(name)
        if name not in self._all and (self.root / name).is_dir():  # made by another worker
            self._adopt(name)
        with self._guard:
            if name in self._all:
                if self._all[name].loading:
                    raise self._loading_error(name)
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
        self._stopping = True  # the start-up loading opens no further collection
        with self._guard:
            collections = list(self._all.values())
        for c in collections:
            if c.managed and c.pipeline is not None:
                c.pipeline.close()

    # -- documents ---------------------------------------------------------------------------------------

    def documents(self, name: str) -> list[dict]:
        return self.get(name).documents()

    def upload(self, name: str, filename: str, data: bytes, folder: str | None = None, replace: bool = False) -> dict:
        """Store a file in the collection and index it (answerable once this returns). Nothing is stored when
        it cannot be converted or would expand past a document's bounds (converted once: the index takes
        that conversion); a failed index leaves the previous file and index as they were."""
        collection = self.get(name)
        source = safe_source(filename, folder)
        if len(data) > self.settings.max_file_bytes:
            raise TooLargeError(f"the file is {len(data):,} bytes; the limit is {self.settings.max_file_bytes:,}")
        try:
            converted = convert_upload(PurePosixPath(source).suffix, data, ConvertOptions.from_settings(self.settings),
                                       self.settings.indexing_niceness)
        except ExpansionError as err:
            raise TooLargeError(f"{source}: {err}") from None
        except ConversionError as err:
            raise CollectionError(f"{source}: {err}") from None
        if not converted.text.strip():
            raise CollectionError(f"{source}: it holds no text")
        document = Document(source, converted.text, converted.format, converted.pages, converted.headings,
                            converted.ocr_pages)
        with self._writing(collection):
            collection.check_target(source, replace)
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

        try:
            collection = self.get(name)
        except LoadingError:  # a watched folder's changes wait for its collection to open (which takes them up)
            self.loaded.wait()
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
        journaled_change(collection, *collection.journal(self.settings.data_dir), op, source, data,
                         lambda: self._reindex(collection, converted))

    def _recover(self, collection: Collection) -> None:
        """Finish or undo the change a kill cut short (rag.service.journal), in the collection's turn."""
        recover(collection, *collection.journal(self.settings.data_dir), lambda: self._reindex(collection))

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
        lowered(self.settings.indexing_niceness, index_store, collection.settings, embedder, progress=False,
                converted=converted, hold=hold)
        if collection.managed:
            self._take_up(collection)
        else:
            collection.pipeline.refresh()


