"""HTML: the main content of a saved page with trafilatura (as Markdown, so headings stay), falling back
to all visible text; never the script, style, navigation, header or footer boilerplate. Each data table is
first rewritten as one paragraph per row that names every cell by its header (rag.ingest.converters.tables)."""
from __future__ import annotations

import re

from rag.ingest.converters.base import ConversionError, Converted, markdown_headings

_BLOCKS = ("p", "div", "li", "br", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
           "blockquote", "pre", "table", "ul", "ol", "dd", "dt")
_BOILERPLATE = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "head")


def convert(data: bytes) -> Converted:
    import trafilatura

    title = _main_heading(data)
    data = tables_as_rows(data)
    text = trafilatura.extract(data, output_format="markdown", include_comments=False, include_tables=True,
                               include_images=False, include_links=False, favor_recall=True) or ""
    if not text.strip():
        text = visible_text(data)
    if title and text.strip() and title not in text:  # trafilatura keeps the page's <h1> as metadata only
        text = f"# {title}\n\n{text}"
    if not text.strip():
        raise ConversionError("has no visible text")
    return Converted(text, "html", headings=markdown_headings(text))


def visible_text(data: bytes) -> str:
    """Every visible text of the page, boilerplate elements removed, one line per block."""
    import lxml.html

    root = lxml.html.fromstring(data)
    for element in list(root.iter(*_BOILERPLATE)):
        element.drop_tree()
    for element in root.iter(*_BLOCKS):  # a block ends its line: <p>Hi</p><p>end</p> is "Hi\nend", not "Hiend"
        element.tail = "\n" + (element.tail or "")
    lines = (" ".join(line.split()) for line in root.text_content().splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _main_heading(data: bytes) -> str:
    """The text of the page's first <h1>, if any (what the page is about: "Nutrient data for … SPAM")."""
    import lxml.html

    try:
        h1 = next(lxml.html.fromstring(data).iter("h1"), None)
    except (ValueError, lxml.etree.ParserError):
        return ""
    return " ".join(h1.text_content().split()) if h1 is not None else ""


def tables_as_rows(data: bytes) -> bytes:
    """The page with every <table> (innermost first) replaced by a <div> of one <p> per row, rendered with
    its header row (a <thead>, or a first row of <th>) and row headers (<th scope=row>) as plain cells."""
    import lxml.html

    from rag.ingest.converters.tables import render_table, split_header

    try:
        root = lxml.html.fromstring(data)
    except (ValueError, lxml.etree.ParserError):
        return data
    tables = list(root.iter("table"))
    if not tables:
        return data
    for hidden in root.xpath("//table//*[contains(translate(@style, ' ', ''), 'display:none')]"):
        hidden.drop_tree()  # sort keys and other text a browser does not show
    for table in reversed(tables):  # the innermost ones first: an outer table then sees their rows as text
        rows, marked = [], False
        stray = [c for c in table.xpath("./thead/th | ./th")]  # header cells outside any row (broken markup)
        if stray:
            rows.append([" ".join(c.text_content().split()) for c in stray])
            marked = True
        for tr in table.iter("tr"):
            if tr.getparent() is not None and _owner(tr) is not table:
                continue
            cells = []
            for cell in tr:
                if cell.tag not in ("td", "th"):
                    continue
                text = " ".join(cell.text_content().split())
                span = (cell.get("colspan") or "1").strip()
                cells += [text] * (min(int(span), 50) if span.isdigit() and int(span) > 0 else 1)
            if not cells:
                continue
            if not any(cells):
                continue  # a row of buttons or spacing
            if not rows:
                marked = tr.getparent().tag == "thead" or all(c.tag == "th" for c in tr if c.tag in ("td", "th"))
            rows.append(cells)
        header, body = split_header(rows, marked)
        div = lxml.html.Element("div")
        for line in render_table(body, header):
            p = lxml.html.Element("p")
            p.text = line
            div.append(p)
        div.tail = table.tail
        table.getparent().replace(table, div)
    return lxml.html.tostring(root, encoding="utf-8")


def _owner(tr):
    """The table a row belongs to (its nearest <table> ancestor)."""
    node = tr.getparent()
    while node is not None and node.tag != "table":
        node = node.getparent()
    return node
