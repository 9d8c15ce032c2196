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
        parts = []
        for i, cell in enumerate(cells):
            if not cell:
                continue
            name = head[i] if i < len(head) else ""
            parts.append(f"{name}: {cell}" if name and name != cell else cell)
        line = "; ".join(parts)
        lines.append(line if line.endswith((".", "!", "?")) else line + ".")
    return lines


def split_header(rows: list[list[str]], first_row_is_header: bool) -> tuple[list[str] | None, list[list[str]]]:
    """(header, body): the first row is the header when it is marked as one, or when it has no empty cell
    and no cell that is a number (a body row of a data table usually has one)."""
    if not rows:
        return None, []
    first = [_clean(c) for c in rows[0]]
    looks_like_header = all(first) and not any(_number(c) for c in first) and len(rows) > 1
    if first_row_is_header or looks_like_header:
        return first, rows[1:]
    return None, rows


def _number(text: str) -> bool:
    stripped = text.replace(",", "").replace(".", "").replace("%", "").replace("-", "").replace(" ", "")
    return stripped.isdigit()
