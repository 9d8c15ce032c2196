"""Word .docx with python-docx: paragraphs and table rows in document order, one per line, each table row
naming its cells by the header row (rag.converters.tables); paragraphs in a Heading or Title style are the
headings."""
from __future__ import annotations

import io

from rag.converters import ConversionError, Converted
from rag.converters.tables import render_table, split_header


def _has_header_row(table) -> bool:
    """Whether Word marks the table's first row as a header row (repeated on each page)."""
    rows = table.rows
    if not len(rows):
        return False
    tr_pr = rows[0]._tr.trPr
    return tr_pr is not None and any(el.tag.endswith("}tblHeader") for el in tr_pr)


def convert(data: bytes) -> Converted:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ConversionError(f"is not a valid .docx ({err})") from None
    lines: list[str] = []
    headings: list[tuple[int, str]] = []
    offset = 0
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            cells = [[cell.text for cell in row.cells] for row in block.rows]
            header, body = split_header(cells, first_row_is_header=_has_header_row(block))
            rows = render_table(body, header)
        else:
            rows = [block.text.strip()]
            style = (block.style.name if block.style is not None else "") or ""
            if rows[0] and (style.startswith("Heading") or style == "Title"):
                headings.append((offset, rows[0]))
        for row in rows:
            if row:
                lines.append(row)
                offset += len(row) + 1
    text = "\n".join(lines)
    if not text.strip():
        raise ConversionError("has no text")
    return Converted(text, "docx", headings=tuple(headings))
