"""Word .docx with python-docx: paragraphs and table rows in document order, one per line, each table row
naming its cells by the header row (rag.ingest.converters.tables); paragraphs in a Heading or Title style are the
headings. A .docx is a zip: the sizes its directory gives for its parts are checked before anything is
unpacked (Python's zipfile never unpacks a part past its stated size), so a small file that would unpack
to gigabytes costs nothing."""
from __future__ import annotations

import io
import zipfile

from rag.ingest.converters.base import DEFAULT_OPTIONS, ConversionError, Converted, ConvertOptions, ExpansionError
from rag.ingest.converters.tables import render_table, split_header


def _has_header_row(table) -> bool:
    """Whether Word marks the table's first row as a header row (repeated on each page)."""
    rows = table.rows
    if not len(rows):
        return False
    tr_pr = rows[0]._tr.trPr
    return tr_pr is not None and any(el.tag.endswith("}tblHeader") for el in tr_pr)


def check_archive(data: bytes, options: ConvertOptions) -> None:
    """ExpansionError when a part of the zip, or all of them together, would unpack past the options' bounds
    (read from the zip's central directory: nothing is decompressed here)."""
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError) as err:
        raise ConversionError(f"is not a valid .docx ({err})") from None
    for member in members:
        if member.file_size > options.max_member_bytes:
            raise ExpansionError(f"unpacks its part {member.filename} to {member.file_size:,} bytes; the limit is "
                                 f"{options.max_member_bytes:,} a part")
    total = sum(m.file_size for m in members)
    if total > options.max_archive_bytes:
        raise ExpansionError(f"unpacks to {total:,} bytes; the limit is {options.max_archive_bytes:,} a file")


def convert(data: bytes, options: ConvertOptions = DEFAULT_OPTIONS) -> Converted:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    check_archive(data, options)
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ConversionError(f"is not a valid .docx ({err})") from None
    lines: list[str] = []
    headings: list[tuple[int, str]] = []
    offset = 0
    styles: dict[str | None, str] = {}  # style id -> name: python-docx looks each up across all styles
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            cells = [[cell.text for cell in row.cells] for row in block.rows]
            header, body = split_header(cells, first_row_is_header=_has_header_row(block))
            rows = render_table(body, header)
        else:
            rows = [block.text.strip()]
            if rows[0]:
                style_id = block._p.style
                if style_id not in styles:
                    styles[style_id] = (block.style.name if block.style is not None else "") or ""
                if styles[style_id].startswith("Heading") or styles[style_id] == "Title":
                    headings.append((offset, rows[0]))
        for row in rows:
            if row:
                lines.append(row)
                offset += len(row) + 1
        options.check_chars(offset - 1)  # stop reading once past the bound, not at the end
    text = "\n".join(lines)
    if not text.strip():
        raise ConversionError("has no text")
    return Converted(text, "docx", headings=tuple(headings))
