"""Documents as users keep them: PDF, HTML, Word and Markdown made in the test, converted with page- and
heading-aware citations; files that cannot be converted skipped with a reason; incremental indexing that
equals a full rebuild."""
import json

import numpy as np
import pytest

from rag.ingest.converters import ConversionError, convert
from rag.ingest.files import load_corpus
from rag.pipeline.qa import Pipeline
from rag.pipeline.retrieval import Retriever
from rag.store.files.index import index_corpus, load_index

from helpers import cli
from helpers.documents import make_docx, make_pdf

PAGE_ONE = "The Harland company was founded in Belfast. It built ships and, later, strong rooms for banks."
PAGE_TWO = "The vault under the old bank was built in 1921 by the Harland company. Its door weighs twelve tonnes."


HTML_PAGE = b"""<!doctype html><html><head><title>Lighthouses</title>
<script>var tracking = "SCRIPTTEXT"; document.write("SCRIPTTEXT");</script><style>nav {color: red}</style></head>
<body><nav><a href="/">Home NAVTEXT</a> <a href="/shop">Shop NAVTEXT</a></nav>
<main><article><h1>Irish lighthouses</h1>
<p>Ireland has about eighty lighthouses, most of them run by the Commissioners of Irish Lights since 1867.</p>
<h2>Fastnet Rock</h2>
<p>The Fastnet Rock lighthouse was designed by William Douglass and first lit in 1904, off the coast of Cork.</p>
</article></main><footer>Copyright FOOTERTEXT</footer></body></html>"""


@pytest.fixture()
def mixed_docs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "vault.pdf").write_bytes(make_pdf([PAGE_ONE, PAGE_TWO]))
    (docs / "lights.html").write_bytes(HTML_PAGE)
    (docs / "report.docx").write_bytes(make_docx())
    (docs / "notes.md").write_text("# Field notes\n\nThe survey ship *Aurora* docked in Galway on 3 May.\n")
    (docs / "plain.txt").write_text("The ferry to the Aran Islands leaves Rossaveal at ten.\n")
    return docs


def test_pdf_pages_are_kept():
    converted = convert(".pdf", make_pdf([PAGE_ONE, PAGE_TWO]))
    assert converted.format == "pdf" and len(converted.pages) == 2
    second = converted.text[converted.pages[1]:]
    assert "built in 1921" in " ".join(second.split())
    assert "1921" not in converted.text[: converted.pages[1]]


def test_html_keeps_the_main_content_and_its_headings_only():
    converted = convert(".html", HTML_PAGE)
    for boilerplate in ("SCRIPTTEXT", "NAVTEXT", "FOOTERTEXT", "color: red"):
        assert boilerplate not in converted.text
    assert "designed by William Douglass" in converted.text
    assert [title for _, title in converted.headings] == ["Irish lighthouses", "Fastnet Rock"]


def test_docx_paragraphs_tables_and_headings():
    converted = convert(".docx", make_docx())
    assert "The apple harvest reached 41 tonnes" in converted.text and "Pears; 7 tonnes." in converted.text  # a table row
    assert [title for _, title in converted.headings] == ["Annual report", "Harvest"]
    offset, title = converted.headings[1]
    assert converted.text[offset:].startswith("Harvest")


@pytest.mark.parametrize("name,data,reason", [
    ("locked.pdf", make_pdf([PAGE_ONE], password="secret"), "encrypted"),
    ("scan.pdf", make_pdf([""], image_only=True), "no text layer"),
    ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "PDF"),
    ("broken.docx", b"PK\x03\x04 not a zip at all", "docx"),
])
def test_files_that_cannot_be_converted_are_skipped_with_the_reason(mixed_docs, name, data, reason, caplog):
    (mixed_docs / name).write_bytes(data)
    corpus = load_corpus(mixed_docs)
    assert name in corpus.skipped and reason in corpus.skipped[name]
    assert len(corpus.documents) == 5
    assert f"skipping {name}" in caplog.text
    with pytest.raises(ConversionError):
        convert("." + name.rsplit(".", 1)[1], data)


@pytest.mark.slow
def test_mixed_folder_answers_from_page_two_with_exact_offsets(mixed_docs, tmp_path, settings, embedder):
    s = settings.with_overrides(docs_dir=mixed_docs, index_dir=tmp_path / "idx")
    index = index_corpus(s, embedder, progress=False)
    assert index.manifest["formats"] == {"docx": 1, "html": 1, "markdown": 1, "pdf": 1, "text": 1}
    assert not any("NAVTEXT" in c.text or "SCRIPTTEXT" in c.text for c in index.chunks)
    pipeline = Pipeline.from_settings(s, rebuild=False, embedder=embedder)
    answer = pipeline.run("When was the vault under the old bank built?")
    assert answer.answer == "1921"
    cite = answer.citations[0]
    assert cite.source == "vault.pdf" and cite.page == 2
    assert pipeline.documents["vault.pdf"].text[cite.start : cite.end] == "1921"
    answer = pipeline.run("Who designed the Fastnet Rock lighthouse?")
    assert answer.answer == "William Douglass"
    assert answer.citations[0].source == "lights.html" and answer.citations[0].heading == "Fastnet Rock"
    # What the CLI and the API show: the page, and the passage around a citation.
    out = cli("ask", "--json", "--no-rebuild", "--docs", mixed_docs, "--index", s.index_dir,
              "When was the vault under the old bank built?")
    citation = json.loads(out.stdout)["citations"][0]
    assert citation["page"] == 2 and citation["heading"] is None
    shown = cli("show", "vault.pdf", citation["start"], citation["end"], "--index", s.index_dir)
    assert shown.returncode == 0 and "(page 2)" in shown.stdout and "[[1921]]" in shown.stdout


def test_index_summary_names_formats_and_skipped_files(mixed_docs, tmp_path):
    (mixed_docs / "locked.pdf").write_bytes(make_pdf([PAGE_ONE], password="secret"))
    out = cli("index", "--docs", mixed_docs, "--index", tmp_path / "idx")
    assert out.returncode == 0, out.stderr
    assert "1 docx, 1 html, 1 markdown, 1 pdf, 1 text" in out.stdout
    assert "skipped 1:" in out.stdout and "locked.pdf: is encrypted" in out.stdout


def _snapshot(index):
    vectors = index.dense.reconstruct_n(0, index.dense.ntotal)
    return [(c.source, c.start, c.end, c.text) for c in index.chunks], vectors


def test_incremental_index_equals_a_full_rebuild(mixed_docs, tmp_path, settings, embedder, monkeypatch):
    s = settings.with_overrides(docs_dir=mixed_docs, index_dir=tmp_path / "idx")
    index_corpus(s, embedder, progress=False)
    (mixed_docs / "plain.txt").write_text("The ferry to the Aran Islands now leaves Rossaveal at nine.\n")  # changed
    (mixed_docs / "notes.md").unlink()  # removed
    (mixed_docs / "new.txt").write_text("A new pier opened at Kilronan in 2022.\n")  # added

    embedded = []
    real_run = type(embedder).run

    def counting_run(self, texts, progress=False):
        embedded.extend(texts)
        return real_run(self, texts, progress)

    monkeypatch.setattr(type(embedder), "run", counting_run)
    incremental = index_corpus(s, embedder, progress=False)
    assert incremental.manifest["build"] == {"incremental": True, "documents_reused": 3, "passages_embedded": 2}
    assert sorted(embedded) == sorted(c.text for c in incremental.chunks if c.source in ("plain.txt", "new.txt"))

    full = index_corpus(s.with_overrides(index_dir=tmp_path / "full"), embedder, progress=False, full=True)
    chunks_a, vectors_a = _snapshot(load_index(s.index_dir))
    chunks_b, vectors_b = _snapshot(full)
    assert chunks_a == chunks_b
    np.testing.assert_allclose(vectors_a, vectors_b, atol=1e-5)
    for question in ("When does the ferry leave?", "Who designed the lighthouse?", "When was the vault built?"):
        a = Retriever.from_settings(load_index(s.index_dir), embedder, s).run(question)
        b = Retriever.from_settings(full, embedder, s).run(question)
        assert [(p.chunk.source, p.chunk.start) for p in a] == [(p.chunk.source, p.chunk.start) for p in b]


def test_a_crash_during_an_incremental_build_leaves_the_previous_index(mixed_docs, tmp_path, settings, embedder,
                                                                       monkeypatch):
    s = settings.with_overrides(docs_dir=mixed_docs, index_dir=tmp_path / "idx")
    before = index_corpus(s, embedder, progress=False).manifest
    (mixed_docs / "plain.txt").write_text("Changed text that will never be indexed.\n")

    def crash(self, texts, progress=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(embedder), "run", crash)
    with pytest.raises(KeyboardInterrupt):
        index_corpus(s, embedder, progress=False)
    assert load_index(s.index_dir).manifest == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.lock", "docs", "idx"]  # the lock file stays (empty)


def test_visible_text_fallback_keeps_blocks_apart():
    from rag.ingest.converters.html import visible_text

    assert visible_text(b"<html><body><nav>Menu</nav><p>Hi</p><p>end</p><script>x()</script></body></html>") == "Hi\nend"


def test_table_rows_name_each_cell_by_its_header():
    """HTML (a header row, row headers, a spanning section row, hidden sort keys), Word (a header row
    marked as such) and rows merged by a PDF table finder all come out one line a row."""
    from rag.ingest.converters.html import tables_as_rows
    from rag.ingest.converters.tables import render_table, split_header, unmerge_rows

    html = (b"<table><tr><th>Lake</th><th>Depth (m)</th><th>Volume</th></tr>"
            b"<tr><td colspan=3>Upper lakes</td></tr>"
            b"<tr><th scope=row>Erie</th><td><span style='display: none'>7001</span>64</td><td>484</td></tr></table>")
    text = convert(".html", b"<html><body><p>Lakes and their depths.</p>" + tables_as_rows(html) + b"</body></html>").text
    assert "Upper lakes\n" in text + "\n" and "Lake: Erie; Depth (m): 64; Volume: 484." in text and "7001" not in text
    header, body = split_header([["Ferry", "Port"], ["Aran Flyer", "Rossaveal"]], first_row_is_header=False)
    assert render_table(body, header) == ["Ferry: Aran Flyer; Port: Rossaveal."]
    assert split_header([["Erie", "64"], ["Huron", "229"]], first_row_is_header=False) == (None, [["Erie", "64"], ["Huron", "229"]])
    assert unmerge_rows([["Alabama\nAlaska", "18,870\n209"], ["Totals", None]]) == [
        ["Alabama", "18,870"], ["Alaska", "209"], ["Totals", ""]]
