"""Tables as text a reader can answer from: each row a sentence-like line that names every cell by its
column header ("Lake: Erie; Maximum depth (m): 64; Volume (km3): 484."), so the answer "64" stands beside
what it is. Shared by the HTML, Word and PDF converters."""
from __future__ import annotations


def _clean(cell: object) -> str:
    return " ".join(str(cell or "").split())


def render_table(rows: list[list[str]], header: list[str] | None = None) -> list[str]:
    """One line per body row: `Header: value; …` for each non-empty cell (a cell under an empty header is
    given alone), ending with a full stop; without a header, the cells joined by "; ". A header wider or
    narrower than a row is matched by position."""
    head = [_clean(h) for h in header] if header else []
    lines = []
    for row in rows:
        cells = [_clean(c) for c in row]
        if not any(cells) or (head and cells == head):
            continue
        if len({c for c in cells if c}) == 1 and len(cells) > 1:
            lines.append(next(c for c in cells if c))  # a section line or note across the table ("Minerals")
            continue
        parts = []
        for i, cell in enumerate(cells):
            spanned = 0 < i < len(head) and head[i] == head[i - 1] and cell == cells[i - 1]
            if not cell or spanned:
                continue  # empty, or the copy of a cell spanning several columns
            name = head[i] if i < len(head) else ""
            parts.append(f"{name}: {cell}" if name and name != cell else cell)
        line = "; ".join(parts)
        lines.append(line if line.endswith((".", "!", "?")) else line + ".")
    return lines


def split_header(rows: list[list[str]], first_row_is_header: bool) -> tuple[list[str] | None, list[list[str]]]:
    """(header, body): the first row is the header when it is marked as one, or when it has two cells or
    more and no cell that is a number (a body row of a data table usually has one). A header cell left
    empty by a cell spanning several columns takes the name of the one before it."""
    if not rows:
        return None, []
    first = [_clean(c) for c in rows[0]]
    filled = sum(1 for c in first if c)
    looks_like_header = filled >= 2 and not any(_number(c) for c in first) and len(rows) > 1
    if not (first_row_is_header or looks_like_header):
        return None, rows
    header: list[str] = []
    for i, cell in enumerate(first):
        header.append(cell or (header[i - 1] if i and first[0] else ""))
    return header, rows[1:]


def unmerge_rows(rows: list[list[str | None]]) -> list[list[str]]:
    """Rows as a PDF table finder gives them, with the rows that a table drawn without lines between them
    merged into one (every filled cell holding the same number of lines, one per row) split apart again;
    the lines of any other cell joined by a space."""
    out: list[list[str]] = []
    for row in rows:
        cells = [(c or "").split("\n") for c in row]
        counts = {len(lines) for lines, c in zip(cells, row) if (c or "").strip()}
        if len(counts) == 1 and (k := counts.pop()) > 1:
            out += [[lines[i] if len(lines) == k else "" for lines in cells] for i in range(k)]
        else:
            out.append([" ".join(lines) for lines in cells])
    return out


def _number(text: str) -> bool:
    stripped = text.replace(",", "").replace(".", "").replace("%", "").replace("-", "").replace(" ", "")
    return stripped.isdigit()
