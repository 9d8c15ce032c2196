"""HTML: the main content of a saved page with trafilatura (as Markdown, so headings stay), falling back
to all visible text; never the script, style, navigation, header or footer boilerplate."""
from __future__ import annotations

import re

from rag.converters import ConversionError, Converted, markdown_headings

_BLOCKS = ("p", "div", "li", "br", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
           "blockquote", "pre", "table", "ul", "ol", "dd", "dt")
_BOILERPLATE = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "head")


def convert(data: bytes) -> Converted:
    import trafilatura

    text = trafilatura.extract(data, output_format="markdown", include_comments=False, include_tables=True,
                               include_images=False, include_links=False, favor_recall=True) or ""
    if not text.strip():
        text = visible_text(data)
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
