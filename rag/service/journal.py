"""Journaled changes of a collection's folder: before an upload or delete touches a file, the change and a copy
of the file it replaces are written down, so that a change a kill cut short is undone (an upload) or finished
(a delete) when the server starts again."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from rag.service.collection import keep_copy, prune_folders, write_atomically

log = logging.getLogger("rag.service.catalog")


def journaled_change(collection, journal: Path, backup: Path, op: str, source: str, data: bytes | None,
                     reindex: Callable[[], None]) -> None:
    """Store (`op` "upload", `data`) or delete ("delete") the file `source` and `reindex`, journaled: a failure
    puts the file back as it was, and a kill leaves the journal, by which the next start undoes the upload or
    finishes the delete (recover)."""
    target = collection.docs_dir / source
    backup.unlink(missing_ok=True)
    had = target.is_file()
    if had:
        keep_copy(target, backup)
    write_atomically(journal, json.dumps({"op": op, "source": source, "backup": had}).encode())
    try:
        if op == "upload":
            write_atomically(target, data)
        else:
            target.unlink(missing_ok=True)  # a file already gone: its document still leaves the index
        reindex()
    except BaseException:
        if had:
            os.replace(backup, target)
        else:
            target.unlink(missing_ok=True)
        prune_folders(collection.docs_dir, target)
        raise
    finally:
        journal.unlink(missing_ok=True)
        backup.unlink(missing_ok=True)
    prune_folders(collection.docs_dir, target)


def recover(collection, journal: Path, backup: Path, reindex: Callable[[], None]) -> None:
    """Finish the delete or undo the upload whose journal a kill left (its client had no reply, so the upload
    never happened and the delete is done), then `reindex`; called in the collection's turn (a live writer in
    another worker holds it, so a journal seen there is a dead one's)."""
    if not journal.exists():
        backup.unlink(missing_ok=True)
        return
    try:
        entry = json.loads(journal.read_text(encoding="utf-8"))
        op, source, had = entry["op"], entry["source"], bool(entry["backup"])
        parts = PurePosixPath(source).parts
        if op not in ("upload", "delete") or not parts or source.startswith("/") or ".." in parts:
            raise ValueError(f"no such change {op!r} of {source!r}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.error("collection %s: the journal %s cannot be read (%s): left as it is", collection.name, journal, err)
        return
    target = collection.docs_dir / source
    if op == "upload" and had and backup.is_file():
        os.replace(backup, target)
    else:
        target.unlink(missing_ok=True)
    prune_folders(collection.docs_dir, target)
    reindex()
    journal.unlink()
    backup.unlink(missing_ok=True)
    log.warning("collection %s: the %s of %s was cut short when the server stopped: %s", collection.name,
                op, source, "undone" if op == "upload" else "finished")
