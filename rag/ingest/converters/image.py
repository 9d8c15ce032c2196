"""Images (.png, .jpg, .tiff): read by OCR (rag.ingest.ocr), every frame of a multi-page TIFF a page."""
from __future__ import annotations

import io

from rag.ingest.converters.base import DEFAULT_OPTIONS, ConversionError, Converted, ConvertOptions
from rag.ingest.converters.pdf import PAGE_BREAK


def convert(data: bytes, options: ConvertOptions = DEFAULT_OPTIONS) -> Converted:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    from rag.ingest import ocr

    if not options.ocr:
        raise ConversionError("is an image and OCR is off (--no-ocr)")
    if not ocr.available():
        raise ConversionError(f"is an image; {ocr.INSTALL_HINT}")
    try:
        image = Image.open(io.BytesIO(data))
        frames = [frame.copy() for _, frame in zip(range(options.ocr_max_pages), ImageSequence.Iterator(image))]
    except (UnidentifiedImageError, OSError) as err:
        raise ConversionError(f"is not a readable image ({err})") from None
    texts = [ocr.read_image(frame).strip() for frame in frames]
    if not any(texts):
        raise ConversionError("is an image in which OCR found no text")
    pages, offset = [], 0
    for i, text in enumerate(texts):
        pages.append(offset)
        offset += len(text) + (len(PAGE_BREAK) if i < len(texts) - 1 else 0)
    return Converted(PAGE_BREAK.join(texts), "image", pages=tuple(pages),
                     ocr_pages=tuple(i + 1 for i, t in enumerate(texts) if t))
