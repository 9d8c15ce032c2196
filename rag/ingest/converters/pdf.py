"""PDF: each page's text layer with pypdf (pure Python), pages separated by a blank line, page starts kept
so a citation can name its page. A page with tables (found by pdfplumber) is read with its tables rendered
row by row under their headers (rag.ingest.converters.tables), in their place on the page. A page with no text
layer, or only garbage, is rendered with PDFium (pypdfium2) and read by OCR (rag.ingest.ocr) when the `ocr` extra
is installed, within the options' page and time limits. A PDF of more pages than a file may have is
refused before any page is read, and reading stops once its text passes the bound on characters."""
from __future__ import annotations

import io
import logging
import time

from rag.ingest.converters.base import DEFAULT_OPTIONS, ConversionError, Converted, ConvertOptions, ExpansionError

PAGE_BREAK = "\n\n"
log = logging.getLogger(__name__)


def convert(data: bytes, options: ConvertOptions = DEFAULT_OPTIONS) -> Converted:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ConversionError("is encrypted (a password is needed to read it)")
        if len(reader.pages) > options.max_pdf_pages:  # before any page is read
            raise ExpansionError(f"has {len(reader.pages):,} pages; the limit is {options.max_pdf_pages:,} a file")
        texts, chars = [], 0
        for page in reader.pages:
            texts.append((page.extract_text() or "").strip())
            chars += len(texts[-1]) + len(PAGE_BREAK)
            options.check_chars(chars - len(PAGE_BREAK))  # stop reading once past the bound, not at the end
    except PdfReadError as err:
        raise ConversionError(f"is not a readable PDF ({err})") from None
    _with_tables(data, texts)
    ocr_pages = _ocr_blank_pages(data, texts, options)
    if not any(texts):
        raise ConversionError(_no_text_reason(options))
    pages, parts, offset = [], [], 0
    for i, text in enumerate(texts):
        if i:
            parts.append(PAGE_BREAK)
            offset += len(PAGE_BREAK)
        pages.append(offset)
        parts.append(text)
        offset += len(text)
    return Converted("".join(parts), "pdf", pages=tuple(pages), ocr_pages=tuple(ocr_pages))


def garbage(text: str) -> bool:
    """Whether a page's text layer is missing or unusable: almost no letters or digits, or many characters
    that no font mapped (U+FFFD, private-use glyphs)."""
    stripped = "".join(text.split())
    if len(stripped) < 3:
        return True
    unmapped = sum(ch == "\ufffd" or "\ue000" <= ch <= "\uf8ff" for ch in stripped)
    readable = sum(ch.isalnum() for ch in stripped)
    return unmapped > 0.1 * len(stripped) or readable < 0.4 * len(stripped)


def _with_tables(data: bytes, texts: list[str]) -> None:
    """Replace the text of each page that has a table with pdfplumber's reading of it: the text around the
    tables as it stands, each table as rendered rows where it stands."""
    import pdfplumber

    from rag.ingest.converters.tables import render_table, split_header, unmerge_rows

    try:
        pdf = pdfplumber.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - pypdf read it; a table finder failing costs the tables, not the file
        return
    with pdf:
        for i, page in enumerate(pdf.pages[: len(texts)]):
            if garbage(texts[i]):
                continue
            try:
                tables = [t for t in page.find_tables() if _is_data_table(t)]
                if not tables:
                    continue
                parts, top = [], 0.0
                for table in sorted(tables, key=lambda t: t.bbox[1]):
                    parts.append(page.crop((0, top, page.width, max(top, table.bbox[1]))).extract_text() or "")
                    rows = unmerge_rows(table.extract())
                    while rows and sum(1 for c in rows[0] if c.strip()) == 1:  # a title row spanning the table
                        parts.append(next(c for c in rows.pop(0) if c.strip()))
                    header, body = split_header(rows, first_row_is_header=False)
                    parts.append("\n".join(render_table(body, header)))
                    top = min(page.height, table.bbox[3])
                parts.append(page.crop((0, top, page.width, page.height)).extract_text() or "")
            except Exception as err:  # noqa: BLE001 - as above: keep the page's plain text
                log.debug("tables of page %d not read: %s", i + 1, err)
                continue
            texts[i] = "\n".join(p.strip() for p in parts if p.strip())


def _is_data_table(table) -> bool:
    rows = table.extract()
    return len(rows) >= 2 and max(len(r) for r in rows) >= 2


def _ocr_blank_pages(data: bytes, texts: list[str], options: ConvertOptions) -> list[int]:
    """Read by OCR the pages whose text layer is missing or garbage, within the options' limits; the
    1-based numbers of the pages read. Nothing when OCR is off or not installed."""
    from rag.ingest import ocr

    blank = [i for i, t in enumerate(texts) if garbage(t)]
    if not blank or not options.ocr or not ocr.available():
        for i in blank:
            texts[i] = ""
        return []
    import pypdfium2 as pdfium
    from tqdm import tqdm

    document = pdfium.PdfDocument(data)
    done: list[int] = []
    started = time.monotonic()
    try:
        for n, i in enumerate(tqdm(blank, desc="OCR", unit="page", leave=False, disable=not options.progress)):
            if n >= options.ocr_max_pages or time.monotonic() - started > options.ocr_max_seconds:
                log.warning("OCR stopped after %d of %d image-only pages (limits: %d pages, %g s a file)",
                            n, len(blank), options.ocr_max_pages, options.ocr_max_seconds)
                for j in blank[n:]:
                    texts[j] = ""
                break
            image = document[i].render(scale=ocr.RENDER_DPI / 72).to_pil()
            texts[i] = ocr.read_image(image).strip()
            if texts[i]:
                done.append(i + 1)
    finally:
        document.close()
    return done


def _no_text_reason(options: ConvertOptions) -> str:
    from rag.ingest import ocr

    if not options.ocr:
        return "has no text layer (a scanned or image-only PDF?) and OCR is off (--no-ocr)"
    if not ocr.available():
        return f"has no text layer (a scanned or image-only PDF?); {ocr.INSTALL_HINT}"
    return "has no text layer and OCR found no text on its pages"
