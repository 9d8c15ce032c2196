"""Read a corpus folder into Documents: every file of a known format through its converter (rag.ingest.converters);
files that cannot be read or converted are skipped with a warning naming them and why."""
from __future__ import annotations

import collections
import hashlib
import logging
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rag.config import Settings
from rag.console import escape_name
from rag.errors import RagError
from rag.ingest.converters import DEFAULT_OPTIONS, SUFFIXES, ConversionError, ConvertOptions, convert
from rag.records import Document

log = logging.getLogger(__name__)


class CorpusError(RagError):
    """The corpus folder cannot be used (missing, or holds no readable document)."""


@dataclass
class Corpus:
    """The documents of a folder, with the hash of every candidate file (used to spot a stale index)."""

    root: Path
    documents: list[Document]
    file_hashes: dict[str, str]
    skipped: dict[str, str] = field(default_factory=dict)  # source -> reason
    unsupported: dict[str, int] = field(default_factory=dict)  # extension -> files of a format not read
    reused: int = 0  # documents taken unchanged from the previous index instead of converted again

    def formats(self) -> dict[str, int]:
        """How many documents of each format."""
        return dict(sorted(collections.Counter(d.format for d in self.documents).items()))


def candidate_files(root: Path, follow_links: bool = False,
                    unsupported: collections.Counter | None = None) -> tuple[list[Path], dict[str, str]]:
    """The files of known formats (rag.ingest.converters.SUFFIXES) under `root` in a stable order, and the ones
    left out with why. Hidden files and folders are ignored; names that are not valid UTF-8 or hold control
    characters, and links that lead outside `root` (unless `follow_links`), are skipped, since a citation
    could not name them (nor a link open them) or they are not the user's corpus. Files of other formats
    are counted by extension in `unsupported` when it is given."""
    root = Path(root)
    real_root = root.resolve()
    files: list[Path] = []
    skipped: dict[str, str] = {}
    for p in root.rglob("*"):
        relative = p.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if p.suffix.lower() not in SUFFIXES:
            if unsupported is not None and p.is_file():
                unsupported[p.suffix.lower() or "(no extension)"] += 1
            continue
        name = relative.as_posix()
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = name.encode("utf-8", "backslashreplace").decode("utf-8")
            skipped[shown] = "its name is not valid UTF-8"
            continue
        if any(unicodedata.category(ch) == "Cc" for ch in name):
            skipped[escape_name(name)] = "its name holds control characters (a newline, an escape): rename it"
            continue
        if not p.is_file():
            continue
        if not follow_links and real_root not in p.resolve().parents:
            skipped[name] = "is a link to a file outside the corpus folder (allow with --follow-links)"
            continue
        files.append(p)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix()), skipped


def load_corpus(root: Path, follow_links: bool = False, max_file_bytes: int = Settings.max_file_bytes,
                previous: dict[str, tuple[str, Document]] | None = None,
                options: ConvertOptions = DEFAULT_OPTIONS, hold: Callable[[str], bool] | None = None,
                converted: dict[str, tuple[str, Document]] | None = None) -> Corpus:
    """Read and convert every candidate file under `root`; skip (and warn about) unreadable, oversized,
    unconvertible, too expanding or empty ones, so one bad file never stops the rest from being indexed. A
    file whose hash is that of `previous[source]` (hash, document) is not converted again: that document is
    reused; nor is one whose hash is that of `converted[source]` (a file its caller has just converted, an
    upload): that document is taken as new. A source for which `hold` is true (a watched file still being
    written: rag.service.watch) is not read at all: it stays as `previous` has it, or is left out until a later build."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"corpus folder not found: {root}")
    documents: list[Document] = []
    hashes: dict[str, str] = {}
    reused = 0
    unsupported: collections.Counter = collections.Counter()
    files, skipped = candidate_files(root, follow_links, unsupported)
    for name, reason in skipped.items():
        log.warning("skipping %s: %s", name, reason)
    for path in files:
        source = path.relative_to(root).as_posix()
        if hold is not None and hold(source):
            if previous and source in previous:
                hashes[source] = previous[source][0]
                documents.append(previous[source][1])
                reused += 1
            continue
        try:
            data = _read(path, max_file_bytes)
        except (OSError, ValueError) as err:
            skipped[source] = str(err)
            log.warning("skipping %s: %s", source, err)
            continue
        digest = hashes[source] = hashlib.sha256(data).hexdigest()
        if previous and source in previous and previous[source][0] == digest:
            documents.append(previous[source][1])
            reused += 1
            continue
        if converted and source in converted and converted[source][0] == digest:
            documents.append(converted[source][1])
            continue
        try:
            result = convert(path.suffix, data, options)
        except ConversionError as err:
            skipped[source] = str(err)
            log.warning("skipping %s: %s", source, err)
            continue
        if not result.text.strip():
            skipped[source] = "is empty"
            log.warning("skipping %s: it is empty", source)
            continue
        documents.append(Document(source, result.text, result.format, result.pages, result.headings, result.ocr_pages))
    if not documents:
        raise CorpusError(f"no readable document under {root} (formats read: {', '.join(SUFFIXES)})")
    return Corpus(root=root, documents=documents, file_hashes=hashes, skipped=skipped,
                  unsupported=dict(sorted(unsupported.items())), reused=reused)


def _read(path: Path, max_bytes: int) -> bytes:
    """A file's bytes; OSError with the reason when it cannot be read, ValueError when it is too large."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(f"is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit per file")
        return path.read_bytes()
    except OSError as err:
        raise OSError(f"cannot be read ({err.strerror or err})") from None


def corpus_hashes(root: Path, follow_links: bool = False, max_file_bytes: int = Settings.max_file_bytes) -> dict[str, str]:
    """The sha256 of every file load_corpus would read under `root`, without decoding them (cheap
    staleness check); files it would skip before reading are left out here too."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"corpus folder not found: {root}")
    hashes: dict[str, str] = {}
    for p in candidate_files(root, follow_links)[0]:
        try:
            hashes[p.relative_to(root).as_posix()] = hashlib.sha256(_read(p, max_file_bytes)).hexdigest()
        except (OSError, ValueError):
            continue
    return hashes


class CorpusWatch:
    """Notices files of the corpus folder that were changed, removed or added since the index was built,
    at most once every `interval` seconds: files are stat'ed, and only those whose size or time changed
    are hashed again (a server must not reread a large corpus on every request)."""

    def __init__(self, root: Path, indexed: dict[str, str], follow_links: bool = False,
                 max_file_bytes: int = Settings.max_file_bytes, interval: float = Settings.corpus_check_seconds) -> None:
        import threading
        import time

        self.root = Path(root)
        self.indexed = dict(indexed)  # source -> sha256 when the index was built
        self.follow_links = follow_links
        self.max_file_bytes = max_file_bytes
        self.interval = interval
        self._clock = time.monotonic
        self._lock = threading.Lock()
        self._stats: dict[str, tuple[int, int]] = {}
        self._checked_at = -float("inf")
        self._changes: dict[str, str] = {}
        self._current = {}
        self.check(force=True)

    def check(self, force: bool = False) -> dict[str, str]:
        """{source: "changed" | "removed" | "added"} as of the last check (made now if it is due)."""
        with self._lock:
            if not force and self._clock() - self._checked_at < self.interval:
                return dict(self._changes)
            changes: dict[str, str] = {}
            seen: set[str] = set()
            files = candidate_files(self.root, self.follow_links)[0] if self.root.is_dir() else []
            for path in files:
                source = path.relative_to(self.root).as_posix()
                seen.add(source)
                try:
                    st = path.stat()
                    stat = (st.st_size, st.st_mtime_ns)
                    if self._stats.get(source) != stat:
                        self._current[source] = hashlib.sha256(_read(path, self.max_file_bytes)).hexdigest()
                        self._stats[source] = stat  # only once read: an unreadable file is tried again
                except (OSError, ValueError):
                    self._current.pop(source, None)
                    self._stats.pop(source, None)
                if source not in self.indexed:
                    if source in self._current:
                        changes[source] = "added"
                elif self._current.get(source) != self.indexed[source]:
                    changes[source] = "changed" if source in self._current else "removed"
            for source in self.indexed.keys() - seen:
                changes[source] = "removed"
            self._changes, self._checked_at = changes, self._clock()
            return dict(changes)
