"""Markdown: kept as text (what a reader quotes is the source as written), with its `#` headings."""
from __future__ import annotations

from rag.ingest.converters.base import Converted, markdown_headings
from rag.ingest.converters.text import decode


def convert(data: bytes) -> Converted:
    text = decode(data)
    return Converted(text, "markdown", headings=markdown_headings(text))
