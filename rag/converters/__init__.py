"""Converters: a document file's bytes -> its text as indexed, plus the structure citations use (page
starts for PDFs, headings for HTML, Markdown and Word). One small module per format, one interface.

The text a converter returns is stored in the index and is what every offset indexes, so
`text[start:end] == answer` holds for every format."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from rag.errors import RagError


class ConversionError(RagError):
    """The file cannot be turned into text; the message says why (encrypted, no text layer, corrupt...)."""


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
    per file being read by OCR."""

    ocr: bool = True
    ocr_max_pages: int = 100
    ocr_max_seconds: float = 600.0
    progress: bool = False

    @classmethod
    def from_settings(cls, settings, progress: bool = False) -> ConvertOptions:
        return cls(ocr=settings.ocr, ocr_max_pages=settings.ocr_max_pages, ocr_max_seconds=settings.ocr_max_seconds,
                   progress=progress)


DEFAULT_OPTIONS = ConvertOptions()


_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def markdown_headings(text: str) -> tuple[tuple[int, str], ...]:
    """(offset, title) of every ATX heading (`# Title`) of Markdown text."""
    return tuple((m.start(), m.group(2).strip()) for m in _ATX_HEADING.finditer(text))


def _converters() -> dict[str, Callable[[bytes, ConvertOptions], Converted]]:
    from rag.converters import docx, html, image, markdown, pdf, text

    plain = {".txt": text.convert, ".md": markdown.convert, ".markdown": markdown.convert, ".html": html.convert,
             ".htm": html.convert, ".docx": docx.convert}
    return {**{s: _without_options(f) for s, f in plain.items()}, ".pdf": pdf.convert,
            **{s: image.convert for s in IMAGE_SUFFIXES}}


def _without_options(converter: Callable[[bytes], Converted]) -> Callable[[bytes, ConvertOptions], Converted]:
    """A converter with nothing to bound (text, Markdown, HTML, Word) in the options-taking form."""
    return lambda data, options: converter(data)


#: Image files, read by OCR.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: The file name endings that are read, and each one's format.
SUFFIXES = (".txt", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx", *IMAGE_SUFFIXES)


def convert(suffix: str, data: bytes, options: ConvertOptions = DEFAULT_OPTIONS) -> Converted:
    """The text and structure of a file's bytes, by its name's ending; ConversionError when it cannot be read."""
    converter = _converters().get(suffix.lower())
    if converter is None:
        raise ConversionError(f"has no converter for {suffix!r} files")
    try:
        return converter(data, options)
    except ConversionError:
        raise
    except Exception as err:  # noqa: BLE001 - a library failing on a damaged file is a skipped file, not a crash
        raise ConversionError(f"cannot be converted ({type(err).__name__}: {err})") from None
