"""What a watch keeps in step (rag.service.watch's Watcher does the watching): the file index of one folder
(`rag index --watch`), or every collection of a server that has a folder here (`rag serve --watch`)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from rag.config import Settings
from rag.errors import RagError
from rag.service.watch import Batch, Watcher
from rag.text import plural

log = logging.getLogger(__name__)


def check_watchable(settings: Settings) -> None:
    """Watching syncs the file index; a PostgreSQL store is refused in one line."""
    if settings.store:
        raise RagError("--watch keeps the file index (--index) in step; it does not work with --store")


def watch_index(settings: Settings, embedder, on_batch: Callable[[Batch], None] | None = None) -> Watcher:
    """`rag index --watch`: the folder settings.docs_dir, synced into settings.index_dir on each settled batch."""
    from rag.store import index_store
    from rag.store.files.index import index_lock, needs_indexing

    check_watchable(settings)

    def sync(name: str, hold: Callable[[str], bool]) -> bool:
        with index_lock(settings.index_dir):
            if not needs_indexing(settings):
                return False
            index_store(settings, embedder, progress=False, hold=hold)
            return True

    return Watcher(lambda: {str(settings.docs_dir): (settings.docs_dir, settings.index_dir)}, sync, settings,
                   on_batch).start()


def watch_collections(settings: Settings, collections) -> Watcher:
    """`rag serve --watch`: the folder of every collection that has one on this machine (the --docs folder
    of `default`, DATA/collections/NAME/docs of the others, those made later included), synced through
    rag.service.catalog (under each collection's lock, as uploads are) and swapped in between questions."""
    from rag.service.catalog import DEFAULT
    from rag.service.collection import collection_settings

    check_watchable(settings)

    def folders() -> dict[str, tuple[Path, Path]]:
        found = {}
        docs = collections.default.store.docs_dir
        if docs is not None:
            found[DEFAULT] = (Path(docs), Path(settings.index_dir))
        for name in collections.names():
            if name != DEFAULT:
                s = collection_settings(settings, name)
                found[name] = (s.docs_dir, s.index_dir)
        return found

    def sync(name: str, hold: Callable[[str], bool]) -> bool:
        from rag.service.collection import NotFoundError

        try:
            return collections.sync_folder(name, hold)
        except NotFoundError:
            return False  # deleted meanwhile

    def logged(batch: Batch) -> None:
        log.info("%s (now %s)", batch.line(), plural(collections.get(batch.folder).counts()[0], "document"))

    return Watcher(folders, sync, settings, logged).start()
