"""Plain text: the file's bytes as UTF-8, nothing changed (a CRLF file keeps its \r\n)."""
from __future__ import annotations

from rag.ingest.converters.base import ConversionError, Converted


def decode(data: bytes) -> str:
    """The text of a file's bytes; ConversionError for binary or non-UTF-8 content."""
    if b"\x00" in data:
        raise ConversionError("looks binary (contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConversionError(f"is not valid UTF-8 ({err.reason} at byte {err.start})") from None


def convert(data: bytes) -> Converted:
    return Converted(decode(data), "text")
