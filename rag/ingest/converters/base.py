"""What every converter shares: the result (`Converted`), the options and bounds (`ConvertOptions`), the
errors, and Markdown heading offsets; the format modules import this, never the package."""
from __future__ import annotations

import re
from dataclasses import dataclass

from rag.config import Settings
from rag.errors import RagError


class ConversionError(RagError):
    """The file cannot be turned into text; the message says why (encrypted, no text layer, corrupt...)."""


class ExpansionError(ConversionError):
    """The file would expand past what one document may (ConvertOptions' bounds): refused, not converted."""


@dataclass(frozen=True)
class Converted:
    """A document's text and structure: `pages[n]` is where page n + 1 starts; `headings` are
    (offset, title) of each heading, in order; `ocr_pages` the 1-based pages whose text was read by OCR."""

    text: str
    format: str
    pages: tuple[int, ...] = ()
    headings: tuple[tuple[int, str], ...] = ()
    ocr_pages: tuple[int, ...] = ()


@dataclass(frozen=True)
class ConvertOptions:
    """What converting may cost: OCR of image-only pages and image files (when the `ocr` extra is
    installed), at most `ocr_max_pages` pages and `ocr_max_seconds` of OCR per file; `progress` shows a bar
    per file being read by OCR. And what one file may expand to (Settings.max_document_chars and the rest):
    past any bound the file is an ExpansionError, found as early as the format allows (a .docx by its zip
    directory before anything is unpacked, a PDF by its page count before any page is read), the passages
    counted as the index would cut them (chunk sizes)."""

    ocr: bool = Settings.ocr
    ocr_max_pages: int = Settings.ocr_max_pages
    ocr_max_seconds: float = Settings.ocr_max_seconds
    progress: bool = False
    max_chars: int = Settings.max_document_chars
    max_passages: int = Settings.max_document_passages
    max_member_bytes: int = Settings.max_archive_member_bytes
    max_archive_bytes: int = Settings.max_archive_bytes
    max_pdf_pages: int = Settings.max_pdf_pages
    chunk_max_chars: int = Settings.chunk_max_chars
    chunk_overlap_sentences: int = Settings.chunk_overlap_sentences

    @classmethod
    def from_settings(cls, settings, progress: bool = False) -> ConvertOptions:
        return cls(ocr=settings.ocr, ocr_max_pages=settings.ocr_max_pages, ocr_max_seconds=settings.ocr_max_seconds,
                   progress=progress, max_chars=settings.max_document_chars,
                   max_passages=settings.max_document_passages, max_member_bytes=settings.max_archive_member_bytes,
                   max_archive_bytes=settings.max_archive_bytes, max_pdf_pages=settings.max_pdf_pages,
                   chunk_max_chars=settings.chunk_max_chars, chunk_overlap_sentences=settings.chunk_overlap_sentences)

    def check_chars(self, chars: int) -> None:
        """ExpansionError once a file's text passes max_chars (converters call it as the text grows)."""
        if chars > self.max_chars:
            raise ExpansionError(f"expands to more than {self.max_chars:,} characters of text (the limit a file)")

    def check_expansion(self, converted: Converted) -> None:
        """ExpansionError when a converted file holds more text or passages than one document may."""
        from rag.ingest.chunking import chunk_document
        from rag.records import Document

        self.check_chars(len(converted.text))
        passages = len(chunk_document(Document("", converted.text), self.chunk_max_chars, self.chunk_overlap_sentences))
        if passages > self.max_passages:
            raise ExpansionError(f"makes {passages:,} passages; the limit is {self.max_passages:,} a file")


DEFAULT_OPTIONS = ConvertOptions()


_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def markdown_headings(text: str) -> tuple[tuple[int, str], ...]:
    """(offset, title) of every ATX heading (`# Title`) of Markdown text."""
    return tuple((m.start(), m.group(2).strip()) for m in _ATX_HEADING.finditer(text))
