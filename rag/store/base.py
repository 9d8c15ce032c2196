"""What retrieval and answering need from an index store (the `Store` protocol) and the rules every store
shares; the two stores (files/, postgres/) import this module and nothing of each other."""
from __future__ import annotations

import contextlib
import fnmatch
import functools
import logging
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import bm25s
import numpy as np

from rag.config import Settings
from rag.errors import RagError
from rag.ingest.chunking import CHUNKING_VERSION
from rag.ingest.files import CorpusWatch, corpus_hashes
from rag.records import Chunk, Document
from rag.text import plural

log = logging.getLogger(__name__)


class Store(Protocol):
    """What retrieval and answering need from an index store. Chunk ids are the store's own keys."""

    kind: str
    documents: Mapping[str, Document]  # source -> Document, read when an answer is cited
    docs_dir: Path | None  # the corpus folder it is kept in step with (None: not here, or not recorded)

    def dense_ranking(self, vector: np.ndarray, n: int, sources: list[str] | None = None) -> list[tuple[Hashable, float]]:
        """(chunk id, inner product) of the n chunks nearest to a normalised query vector, best first; with
        `sources`, only chunks of those documents are searched (a filter in the search, not after it)."""

    def lexical_ranking(self, tokens: list[str], n: int, sources: list[str] | None = None) -> list[tuple[Hashable, float]]:
        """(chunk id, BM25 score) of the n best chunks for the query's lexical tokens (rag.store.files.index.tokenize),
        only among `sources`' chunks when given."""

    def sources_matching(self, patterns: list[str]) -> list[str]:
        """The documents whose source is one of `patterns` or matches one as a glob (`reports/2024/*.pdf`)."""

    def chunks(self, ids: list[Hashable]) -> list[Chunk | None]:
        """The chunks with these ids, in the same order (None for one removed since it was ranked)."""

    def counts(self) -> tuple[int, int]:
        """(documents, passages) in the store now."""

    def document_stats(self) -> dict[str, tuple[str, int]]:
        """source -> (format, passages) of every document in the store."""

    def file_hashes(self) -> dict[str, str]:
        """source -> SHA-256 of the file each document was read from (to spot changed corpus files)."""

    def describe(self) -> dict:
        """What /health says about the store."""

    def snapshot(self) -> contextlib.AbstractContextManager:
        """A block within which every read sees the store as of its start (one question's reads)."""

    def refresh(self) -> bool:
        """Take up a newer index written by another process (`rag index`); True when it did. Called between
        questions, never during one."""

    def corpus_watch(self, settings: Settings) -> CorpusWatch | None:
        """What notices corpus files changed since indexing (None where the store changes by itself)."""

    def close(self) -> None:
        """Release what the store holds open (connections)."""


def match_sources(sources: Iterable[str], patterns: list[str]) -> list[str]:
    """The sources equal to a pattern or matching it as a glob (`*` also crosses `/`, as fnmatch does)."""
    exact = set(patterns)
    return [s for s in sources if s in exact or any(fnmatch.fnmatchcase(s, p) for p in patterns)]


class IndexLoadError(RagError):
    """Base class of the index's errors; the message is meant for the user."""


class StaleIndexError(IndexLoadError):
    """The corpus or the settings changed since the index was built."""


class CorpusFolderMismatchError(IndexLoadError):
    """A documents folder was given that is not the one the index was built from."""


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
    def of(cls, index) -> IndexReport:
        """The report of a file index just built (its manifest says what the build did)."""
        m, build = index.manifest, index.manifest["build"]
        how = (f"{build['documents_reused']} unchanged reused, {plural(build['passages_embedded'], 'passage')} embedded"
               if build["incremental"] else "full build")
        return cls(m["n_documents"], m["n_chunks"], m["build_seconds"], how, str(index.path), index.docs_dir,
                   m["formats"], m["skipped"], m["unsupported"], build["passages_embedded"])


def index_signature(settings: Settings) -> dict[str, object]:
    """What an index's content depends on: the settings, and the version of the chunking rules."""
    return {**settings.index_params(), "chunking": CHUNKING_VERSION}


@dataclass(frozen=True)
class FolderChanges:
    """How a corpus folder differs from what a store holds of it: sources added, removed and changed (by
    file hash), and settings the store was built with that differ now. Empty (false) when it is current."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()  # "setting chunk_max_chars was 600, now 800", or why the settings differ

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.settings)

    def reasons(self) -> list[str]:
        """Each change in words, settings first."""
        return ([*self.settings] + [f"{s} was added" for s in self.added] + [f"{s} was removed" for s in self.removed]
                + [f"{s} changed" for s in self.changed])

    def summary(self) -> str:
        """The first five reasons, and how many more."""
        reasons = self.reasons()
        return "; ".join(reasons[:5]) + (f" (and {len(reasons) - 5} more)" if len(reasons) > 5 else "")


def folder_changes(built: Mapping[str, str], settings: Settings, settings_changed: Iterable[str] = ()) -> FolderChanges:
    """What changed in settings.docs_dir since a store recorded these file hashes (source -> SHA-256)."""
    now = corpus_hashes(settings.docs_dir, settings.follow_links, settings.max_file_bytes)
    return FolderChanges(tuple(sorted(now.keys() - built.keys())), tuple(sorted(built.keys() - now.keys())),
                         tuple(sorted(s for s in now.keys() & built.keys() if now[s] != built[s])),
                         tuple(settings_changed))


def keep_in_step(changes: FolderChanges, rebuild: bool, what: str, docs: Path, command: str) -> bool:
    """The one rule, for every store, when a question finds the store's folder changed: True when the store
    should be updated from its folder first (files added or changed, or other settings). A question never
    removes documents: with any removed, the store answers as it is, with a warning naming them, until an
    explicit `command` (`rag index`). Without `rebuild`, any change is a StaleIndexError naming `command`."""
    if not changes:
        return False
    if not rebuild:
        raise StaleIndexError(f"{what} is out of date with {docs}: {changes.summary()}. Update it with `{command}`.")
    if changes.removed:
        names = list(changes.removed)
        log.warning("%s of %s %s no longer in %s (%s): answering from it as it is; run `%s` to update it",
                    plural(len(names), "document"), what, "is" if len(names) == 1 else "are", docs,
                    ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else ""), command)
        return False
    log.warning("%s is out of date (%s): updating it", what, changes.summary())
    return True
