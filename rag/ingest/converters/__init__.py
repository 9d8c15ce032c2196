"""Converters: a document file's bytes -> its text as indexed, plus the structure citations use (page
starts for PDFs, headings for HTML, Markdown and Word). One small module per format, one interface.

The text a converter returns is stored in the index and is what every offset indexes, so
`text[start:end] == answer` holds for every format."""
from __future__ import annotations

from collections.abc import Callable

from rag.ingest.converters.base import (
    DEFAULT_OPTIONS,
    ConversionError,
    Converted,
    ConvertOptions,
    ExpansionError,
    markdown_headings,
)

__all__ = ["DEFAULT_OPTIONS", "IMAGE_SUFFIXES", "SUFFIXES", "ConversionError", "ConvertOptions", "Converted",
           "ExpansionError", "convert", "markdown_headings"]


def _converters() -> dict[str, Callable[[bytes, ConvertOptions], Converted]]:
    from rag.ingest.converters import docx, html, image, markdown, pdf, text

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
