"""The file index kept in step with its corpus folder: which folder an index belongs to (recorded in its
manifest), whether it is stale, the explicit build (`rag index`) and the open that questions use. The
in-memory index is rag.store.files.search, the files rag.store.files.folder; their public names are re-exported here."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import faiss

from rag.config import DEFAULT_DOCS_DIR, Settings
from rag.ingest.converters import ConvertOptions
from rag.ingest.files import Corpus, CorpusError, load_corpus
from rag.records import Chunk, Document
from rag.store.base import FolderChanges, IndexReport, folder_changes, index_signature, keep_in_step, tokenize  # noqa: F401
from rag.store.embedding import Embedder
from rag.store.files.folder import (  # noqa: F401 - re-exported: rag.store.files.index is the index's public module
    FORMAT_VERSION,
    INDEX_ENTRIES,
    MANIFEST,
    CorpusFolderMismatchError,
    CorruptIndexError,
    IndexLoadError,
    MissingIndexError,
    OutdatedIndexError,
    StaleIndexError,
    UnsafeIndexFolderError,
    check_index_folder,
    committed_build,
    index_identity,
    index_lock,
    load_index,
    read_manifest,
    remove_index_folder,
    save_index,
)
from rag.store.files.search import (  # noqa: F401
    SearchIndex,
    build_index,
    memory_documents,
    memory_index,
    sorted_vocabulary_ids,
)

log = logging.getLogger(__name__)


def cached_index_dir(docs_dir: Path) -> Path:
    """Where the Python API keeps the index of a folder when no index folder is given: in the cache, named
    for the folder and keyed by its absolute path (never in the working directory)."""
    import hashlib

    from rag.runtime.onnx import cache_dir

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


def index_corpus(settings: Settings, embedder: Embedder, progress: bool = True, full: bool = False,
                 hold: Callable[[str], bool] | None = None,
                 converted: dict[str, tuple[str, Document]] | None = None) -> SearchIndex:
    """Read the corpus folder, build the index and save it atomically to settings.index_dir (an explicit
    `rag index`: the only build that may switch an index to another folder than the one it records).

    Incremental unless `full`: when the folder holds a readable index built with the same settings, the
    files whose hash is unchanged are neither converted nor embedded again (their text, chunks and
    vectors are reused), removed files drop out, and only added and changed files are processed. The
    result is the index a full rebuild gives (same chunks in the same order, same vectors to float
    rounding), written beside the old one and swapped in. One build at a time per index folder. Sources
    `hold` is true for stay as the previous index has them (rag.ingest.files.load_corpus; a watched folder).
    `converted` (source -> (file hash, document)) names files already converted by the caller, not converted
    again."""
    started = time.perf_counter()
    with index_lock(settings.index_dir):
        settings = replace(settings, docs_dir=_docs_to_index(settings))
        check_index_folder(settings.index_dir, settings.docs_dir)  # before any work, and before anything is touched
        previous = None if full else _reusable_index(settings)
        reuse_docs = None
        if previous is not None:
            files = previous.manifest["files"]
            reuse_docs = {s: (files[s], d) for s, d in previous.documents.items() if s in files}
        corpus = load_corpus(settings.docs_dir, settings.follow_links, settings.max_file_bytes, previous=reuse_docs,
                             options=ConvertOptions.from_settings(settings, progress), hold=hold,
                             converted=converted)
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
    if index.manifest.get("params") != index_signature(settings):
        return None
    return index


def _manifest(corpus: Corpus, chunks: list[Chunk], dense: faiss.Index, settings: Settings, seconds: float) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(seconds, 2),
        "params": index_signature(settings),
        "embedding_dimension": dense.d,
        "n_documents": len(corpus.documents),
        "n_chunks": len(chunks),
        "files": corpus.file_hashes,
        # The folder it was built from, absolute and relative to the index (rag.store.files.index.recorded_corpus).
        "docs_dir": str(Path(settings.docs_dir).resolve()),
        "docs_dir_relative": os.path.relpath(Path(settings.docs_dir).resolve(), Path(settings.index_dir).resolve()),
        "formats": corpus.formats(),
        "skipped": corpus.skipped,
        "unsupported": corpus.unsupported,
    }


def staleness(manifest: dict, settings: Settings) -> FolderChanges:
    """How an index no longer matches the corpus folder and settings; empty (false) when it is current."""
    recorded = manifest.get("params", {})
    settings_changed = [f"setting {key} was {recorded.get(key)!r}, now {value!r}"
                        for key, value in index_signature(settings).items() if recorded.get(key) != value]
    return folder_changes(manifest.get("files", {}), settings, settings_changed)


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
    if keep_in_step(staleness(manifest, settings), rebuild, f"the index at {settings.index_dir}", docs, "rag index"):
        return index_corpus(settings, embedder)
    return load_index(settings.index_dir, docs)
