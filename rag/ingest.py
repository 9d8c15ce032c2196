"""Read a corpus folder into Documents: every .txt and .md file as UTF-8, unreadable files skipped with a warning."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from rag.types import Document

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".md")


class CorpusError(Exception):
    """The corpus folder cannot be used (missing, or holds no readable document)."""


@dataclass
class Corpus:
    """The documents of a folder, with the hash of every candidate file (used to spot a stale index)."""

    root: Path
    documents: list[Document]
    file_hashes: dict[str, str]
    skipped: dict[str, str] = field(default_factory=dict)  # source -> reason


def candidate_files(root: Path) -> list[Path]:
    """The .txt/.md files under `root`, in a stable order; hidden files and folders are left out."""
    files = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def decode_document(data: bytes) -> str:
    """The text of a file's bytes; raises ValueError for binary or non-UTF-8 content."""
    if b"\x00" in data:
        raise ValueError("looks binary (contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"is not valid UTF-8 ({err.reason} at byte {err.start})") from None


def load_corpus(root: Path) -> Corpus:
    """Read every candidate file under `root`; skip (and warn about) binary, undecodable or empty ones."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"corpus folder not found: {root}")
    documents: list[Document] = []
    hashes: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for path in candidate_files(root):
        source = path.relative_to(root).as_posix()
        data = path.read_bytes()
        hashes[source] = hashlib.sha256(data).hexdigest()
        try:
            text = decode_document(data)
        except ValueError as err:
            skipped[source] = str(err)
            log.warning("skipping %s: %s", source, err)
            continue
        if not text.strip():
            skipped[source] = "is empty"
            log.warning("skipping %s: it is empty", source)
            continue
        documents.append(Document(source=source, text=text))
    if not documents:
        raise CorpusError(f"no readable .txt or .md document under {root}")
    return Corpus(root=root, documents=documents, file_hashes=hashes, skipped=skipped)


def corpus_hashes(root: Path) -> dict[str, str]:
    """The sha256 of every candidate file under `root`, without decoding them (cheap staleness check)."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"corpus folder not found: {root}")
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in candidate_files(root)
    }
