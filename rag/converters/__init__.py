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
    (offset, title) of each heading, in order."""

    text: str
    format: str
    pages: tuple[int, ...] = ()
    headings: tuple[tuple[int, str], ...] = ()


_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def markdown_headings(text: str) -> tuple[tuple[int, str], ...]:
    """(offset, title) of every ATX heading (`# Title`) of Markdown text."""
    return tuple((m.start(), m.group(2).strip()) for m in _ATX_HEADING.finditer(text))


def _converters() -> dict[str, Callable[[bytes], Converted]]:
    from rag.converters import docx, html, markdown, pdf, text

    return {".txt": text.convert, ".md": markdown.convert, ".markdown": markdown.convert, ".pdf": pdf.convert,
            ".html": html.convert, ".htm": html.convert, ".docx": docx.convert}


#: The file name endings that are read, and each one's format.
SUFFIXES = (".txt", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx")


def convert(suffix: str, data: bytes) -> Converted:
    """The text and structure of a file's bytes, by its name's ending; ConversionError when it cannot be read."""
    converter = _converters().get(suffix.lower())
    if converter is None:
        raise ConversionError(f"has no converter for {suffix!r} files")
    try:
        return converter(data)
    except ConversionError:
        raise
    except Exception as err:  # noqa: BLE001 - a library failing on a damaged file is a skipped file, not a crash
        raise ConversionError(f"cannot be converted ({type(err).__name__}: {err})") from None
