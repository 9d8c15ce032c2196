"""PDF with pypdf (pure Python): each page's text layer, pages separated by a blank line; page starts
are kept so a citation can name its page."""
from __future__ import annotations

import io

from rag.converters import ConversionError, Converted

PAGE_BREAK = "\n\n"


def convert(data: bytes) -> Converted:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ConversionError("is encrypted (a password is needed to read it)")
        texts = [(page.extract_text() or "").strip() for page in reader.pages]
    except PdfReadError as err:
        raise ConversionError(f"is not a readable PDF ({err})") from None
    if not any(texts):
        raise ConversionError("has no text layer (a scanned or image-only PDF?)")
    pages, parts, offset = [], [], 0
    for i, text in enumerate(texts):
        if i:
            parts.append(PAGE_BREAK)
            offset += len(PAGE_BREAK)
        pages.append(offset)
        parts.append(text)
        offset += len(text)
    return Converted("".join(parts), "pdf", pages=tuple(pages))
