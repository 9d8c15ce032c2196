"""Converters: a document file's bytes -> its text as indexed, plus the structure citations use (page
starts for PDFs, headings for HTML, Markdown and Word). One small module per format, one interface.

The text a converter returns is stored in the index and is what every offset indexes, so
`text[start:end] == answer` holds for every format."""
from __future__ import annotations

import re
from collections.abc import Callable
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
        from rag.chunking import chunk_document
        from rag.types import Document

        self.check_chars(len(converted.text))
        passages = len(chunk_document(Document("", converted.text), self.chunk_max_chars, self.chunk_overlap_sentences))
        if passages > self.max_passages:
            raise ExpansionError(f"makes {passages:,} passages; the limit is {self.max_passages:,} a file")


DEFAULT_OPTIONS = ConvertOptions()


_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def markdown_headings(text: str) -> tuple[tuple[int, str], ...]:
    """(offset, title) of every ATX heading (`# Title`) of Markdown text."""
    return tuple((m.start(), m.group(2).strip()) for m in _ATX_HEADING.finditer(text))


def _converters() -> dict[str, Callable[[bytes, ConvertOptions], Converted]]:
    from rag.converters import docx, html, image, markdown, pdf, text

    plain = {".txt": text.convert, ".md": markdown.convert, ".markdown": markdown.convert, ".html": html.convert,
             ".htm": html.convert}
    return {**{s: _without_options(f) for s, f in plain.items()}, ".docx": docx.convert, ".pdf": pdf.convert,
            **{s: image.convert for s in IMAGE_SUFFIXES}}


def _without_options(converter: Callable[[bytes], Converted]) -> Callable[[bytes, ConvertOptions], Converted]:
    """A converter that cannot expand its file (text, Markdown, HTML: never more characters than bytes) in
    the options-taking form; what it gives is still bounded by convert()."""
    return lambda data, options: converter(data)


#: Image files, read by OCR.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: The file name endings that are read, and each one's format.
SUFFIXES = (".txt", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx", *IMAGE_SUFFIXES)


def convert(suffix: str, data: bytes, options: ConvertOptions = DEFAULT_OPTIONS) -> Converted:
    """The text and structure of a file's bytes, by its name's ending; ConversionError when it cannot be read,
    ExpansionError when it holds more than one document may (the options' bounds: the one place they apply,
    for uploads and `rag index` alike)."""
    converter = _converters().get(suffix.lower())
    if converter is None:
        raise ConversionError(f"has no converter for {suffix!r} files")
    try:
        converted = converter(data, options)
    except ConversionError:
        raise
    except Exception as err:  # noqa: BLE001 - a library failing on a damaged file is a skipped file, not a crash
        raise ConversionError(f"cannot be converted ({type(err).__name__}: {err})") from None
    options.check_expansion(converted)
    return converted
