"""Watched corpus folders (`rag serve --watch`, `rag index --watch`): watchdog reports what changed (inotify,
else polling), changes are collected until the folder falls quiet and every changed file kept its size and
time for Settings.watch_settle_seconds, then ONE incremental sync of the folder runs (the existing index
code, under its lock), so a burst of files is a batch, not a rebuild per file. A file still being written
is held back (kept as indexed, or left out until it settles), so none is indexed half-way."""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rag.config import Settings
from rag.errors import RagError
from rag.ingest.converters import SUFFIXES

log = logging.getLogger(__name__)

#: How often the folders to watch are looked at again (a collection made or deleted meanwhile).
RECONCILE_SECONDS = 2.0
#: The pending key of a folder itself: a folder newly watched is compared with its index once.
ROOT = "."
#: Events that change nothing on disk.
IDLE_EVENTS = ("opened", "closed_no_write")

#: sync(folder name, hold) -> whether it wrote a new index; hold(source) is true for a file to leave as indexed.
Sync = Callable[[str, Callable[[str], bool]], bool]


@dataclass
class Batch:
    """What one sync of a watched folder changed in its index."""

    folder: str
    added: int
    changed: int
    removed: int
    seconds: float
    at: str  # ISO time the sync ended

    def line(self) -> str:
        return (f"synced {self.folder}: {self.added} added, {self.changed} changed, {self.removed} removed "
                f"in {self.seconds:.2f} s")


class _Pending:
    """A changed path: when its last event came, and its (size, mtime) and since when it has had it."""

    __slots__ = ("last_event", "stat", "stat_since")

    def __init__(self, now: float) -> None:
        self.last_event, self.stat, self.stat_since = now, (), now


class _Folder:
    """One watched folder: its index, its watchdog watch and the changes not synced yet."""

    def __init__(self, name: str, root: Path, index_dir: Path) -> None:
        self.name, self.root, self.index_dir = name, root, index_dir
        self.identity = _identity(root)  # a folder deleted and made again needs a new watch
        self.watch = None
        self.pending: dict[str, _Pending] = {}
        self.since: float | None = None  # when the oldest unsynced change came


class Watcher:
    """Watches the folders `folders()` names ({name: (folder, index folder)}, looked at again every few
    seconds) and calls `sync(name, hold)` once per settled batch, one folder at a time, on its own thread."""

    def __init__(self, folders: Callable[[], dict[str, tuple[Path, Path]]], sync: Sync, settings: Settings,
                 on_batch: Callable[[Batch], None] | None = None) -> None:
        self._folders_of, self._sync, self._on_batch = folders, sync, on_batch
        self.settle = settings.watch_settle_seconds
        self.max_wait = settings.watch_max_wait_seconds
        self.poll_seconds = settings.watch_poll_seconds
        self.polling = settings.watch_polling
        self.tick = min(0.25, self.settle / 4)
        self.mode = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._folders: dict[str, _Folder] = {}
        self._observer = None
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.synced_files = 0
        self.last_batch: Batch | None = None
        self.last_error: str | None = None
        self.syncing: str | None = None

    # -- starting and stopping ---------------------------------------------------------------------------

    def start(self) -> Watcher:
        self._observer = self._new_observer()
        self._reconcile()
        self._thread = threading.Thread(target=self._run, name="rag-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Stop watching; a sync under way is let finish (its index is written whole or not at all). False
        when it is still running after `timeout` seconds."""
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _new_observer(self):
        """watchdog's native observer (inotify on Linux), else (asked for, or it fails) its polling one."""
        if not self.polling:
            from watchdog.observers import Observer

            try:
                observer = Observer()
                observer.start()
                name = type(observer).__name__.removesuffix("Observer").lower()
                self.mode = "windows" if name.startswith("windows") else name
                return observer
            except OSError as err:
                log.warning("cannot watch with the system's file events (%s): polling every %s s instead", err,
                            self.poll_seconds)
        from watchdog.observers.polling import PollingObserver

        observer = PollingObserver(timeout=self.poll_seconds)
        observer.start()
        self.mode, self.polling = "polling", True
        return observer

    def _fall_back_to_polling(self, err: OSError) -> None:
        """inotify ran out (watches or instances): every folder is watched by polling from now on."""
        log.warning("cannot watch with inotify (%s; see fs.inotify.max_user_watches): polling every %s s instead",
                    err, self.poll_seconds)
        old, self.polling = self._observer, True
        self._observer = self._new_observer()
        old.stop()
        for folder in list(self._folders.values()):
            folder.watch = None
            self._schedule(folder)

    # -- folders -------------------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Watch the folders named now; a new one (or one made again) is compared with its index once."""
        try:
            wanted = {name: (Path(root), Path(index)) for name, (root, index) in self._folders_of().items()
                      if root is not None and Path(root).is_dir()}
        except Exception as err:  # noqa: BLE001 - the folders are looked at again in a moment
            log.warning("cannot list the folders to watch: %s", err)
            return
        for name in list(self._folders):
            folder = self._folders[name]
            root = wanted.get(name, (None,))[0]
            if root is None or root != folder.root or _identity(root) != folder.identity:
                self._unschedule(folder)
                with self._lock:
                    del self._folders[name]
        for name, (root, index_dir) in wanted.items():
            if name not in self._folders:
                folder = _Folder(name, root, index_dir)
                if self._schedule(folder):
                    with self._lock:
                        self._folders[name] = folder
                        self._note(folder, ROOT, time.monotonic())

    def _schedule(self, folder: _Folder) -> bool:
        try:
            folder.watch = self._observer.schedule(_Handler(self, folder), str(folder.root), recursive=True)
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False  # gone meanwhile
        except OSError as err:
            if self.polling:
                log.warning("cannot watch %s: %s", folder.root, err)
                return False
            self._fall_back_to_polling(err)
            return folder.watch is not None or self._schedule(folder)

    def _unschedule(self, folder: _Folder) -> None:
        if folder.watch is not None:
            try:
                self._observer.unschedule(folder.watch)
            except (KeyError, OSError):
                pass  # its folder is gone, and the watch with it
            folder.watch = None

    # -- events --------------------------------------------------------------------------------------------

    def event(self, folder: _Folder, event) -> None:
        """A watchdog event in `folder`: a path the indexer would read (or a sub-folder) becomes pending."""
        if event.event_type in IDLE_EVENTS or (event.is_directory and event.event_type == "modified"):
            return
        now = time.monotonic()
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if not path:
                continue
            try:
                relative = Path(os.fsdecode(path)).relative_to(folder.root)
            except ValueError:
                continue
            if relative == Path(".") or any(part.startswith(".") for part in relative.parts):
                continue  # hidden and temporary files (an upload's, an editor's) are not read either
            if not event.is_directory and relative.suffix.lower() not in SUFFIXES:
                continue
            with self._lock:
                self._note(folder, relative.as_posix(), now)

    def _note(self, folder: _Folder, key: str, now: float) -> None:
        """Called under the lock."""
        entry = folder.pending.get(key)
        if entry is None:
            folder.pending[key] = _Pending(now)
        else:
            entry.last_event = now
        if folder.since is None:
            folder.since = now

    # -- batches -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_reconcile = time.monotonic() + RECONCILE_SECONDS
        while not self._stop.wait(self.tick):
            if time.monotonic() >= next_reconcile:
                self._reconcile()
                next_reconcile = time.monotonic() + RECONCILE_SECONDS
            for folder in list(self._folders.values()):
                batch = self._settled(folder)
                if batch and not self._stop.is_set():
                    self._sync_folder(folder, batch)

    def _settled(self, folder: _Folder) -> list[str]:
        """The pending paths to sync now: all of them once each kept its size and time for the settle
        interval with no event meanwhile; the settled ones alone when the folder has not been quiet for
        max_wait seconds. Empty: wait."""
        now = time.monotonic()
        with self._lock:
            if not folder.pending:
                return []
            items = list(folder.pending.items())
        for key, entry in items:
            stat = _stat(folder.root / key)
            if stat != entry.stat:
                entry.stat, entry.stat_since = stat, now
        settled = [k for k, e in items if now - e.last_event >= self.settle and now - e.stat_since >= self.settle]
        if len(settled) == len(items) or (settled and now - folder.since >= self.max_wait):
            return settled
        return []

    def _sync_folder(self, folder: _Folder, keys: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                entry = folder.pending.get(key)
                if entry is not None and entry.last_event <= now - self.settle:
                    del folder.pending[key]
            folder.since = now if folder.pending else None

        def hold(source: str) -> bool:
            """A file with changes not settled yet, or written in the last settle interval: left as indexed."""
            with self._lock:
                if source in folder.pending:
                    return True
            try:
                age = time.time() - (folder.root / source).stat().st_mtime
            except OSError:
                return False
            return abs(age) < self.settle

        before = _indexed_files(folder.index_dir)
        started = time.perf_counter()
        self.syncing = folder.name
        try:
            wrote = self._sync(folder.name, hold)
        except RagError as err:
            self.last_error = f"{folder.name}: {err}"
            log.warning("could not sync the watched folder %s: %s (still answering from the previous index)",
                        folder.root, err)
            return
        except Exception as err:  # noqa: BLE001 - one failed sync must not end the watching
            self.last_error = f"{folder.name}: {type(err).__name__}: {err}"
            log.exception("could not sync the watched folder %s (still answering from the previous index)", folder.root)
            return
        finally:
            self.syncing = None
        if not wrote:
            return
        after = _indexed_files(folder.index_dir)
        batch = Batch(folder.name, len(after.keys() - before.keys()), sum(1 for s in after.keys() & before.keys()
                      if after[s] != before[s]), len(before.keys() - after.keys()), time.perf_counter() - started,
                      time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.batches += 1
        self.synced_files += batch.added + batch.changed + batch.removed
        self.last_batch, self.last_error = batch, None
        if self._on_batch is not None:
            self._on_batch(batch)

    def describe(self) -> dict:
        """What /health says about the watching."""
        with self._lock:
            folders = {f.name: {"folder": str(f.root), "pending": len([k for k in f.pending if k != ROOT])}
                       for f in self._folders.values()}
        last = self.last_batch
        return {"mode": self.mode, "pending": sum(f["pending"] for f in folders.values()),
                "last_synced": last.at if last else None, "synced_files": self.synced_files, "batches": self.batches,
                "syncing": self.syncing, "settle_seconds": self.settle, "folders": folders,
                "last_batch": {"folder": last.folder, "added": last.added, "changed": last.changed,
                               "removed": last.removed, "seconds": round(last.seconds, 2)} if last else None,
                "last_error": self.last_error}


class _Handler:
    """watchdog's event handler for one folder: hands every event to the watcher."""

    def __init__(self, watcher: Watcher, folder: _Folder) -> None:
        self.watcher, self.folder = watcher, folder

    def dispatch(self, event) -> None:
        self.watcher.event(self.folder, event)


def _stat(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return ("gone",)
    return st.st_size, st.st_mtime_ns


def _identity(path: Path) -> tuple | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _indexed_files(index_dir: Path) -> dict[str, str]:
    from rag.store.files.index import IndexLoadError, read_manifest

    try:
        return dict(read_manifest(index_dir).get("files") or {})
    except IndexLoadError:
        return {}
