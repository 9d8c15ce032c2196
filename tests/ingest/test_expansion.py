"""A small file never takes the server down: what a document may expand to (text, passages, a .docx's
unpacked parts, a PDF's pages) is bounded, found before the work it would cost, refused on upload with a
one-line 413 and skipped by `rag index` with a one-line reason; an upload is converted once."""
import io
import time
import tracemalloc
import zipfile

import pytest
from fastapi.testclient import TestClient

from rag.ingest.converters import ConvertOptions, ExpansionError, convert
from rag.service.server import create_app

from helpers import cli
from helpers.documents import make_docx, make_pdf

SENTENCE = b"All work and no play makes Jack a dull boy. "


def docx_bomb(characters: int = 60_000_000) -> bytes:
    """A real .docx (python-docx's) whose document.xml holds `characters` of text in repeated paragraphs:
    a few hundred KB that unpack to more than `characters` bytes. Written a piece at a time."""
    source = zipfile.ZipFile(io.BytesIO(make_docx()))
    paragraph = b"<w:p><w:r><w:t>" + SENTENCE * 20 + b"</w:t></w:r></w:p>"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        for member in source.infolist():
            if member.filename != "word/document.xml":
                bomb.writestr(member, source.read(member))
                continue
            xml = source.read(member)
            head, _, _ = xml.partition(b"<w:body>")
            with bomb.open("word/document.xml", "w", force_zip64=True) as f:
                f.write(head + b"<w:body>")
                block = paragraph * 1000
                for _ in range(characters // (len(SENTENCE) * 20 * 1000) + 1):
                    f.write(block)
                f.write(b"</w:body></w:document>")
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return docx_bomb()


def test_a_docx_bomb_is_refused_by_its_zip_directory_in_no_time_and_memory(bomb):
    assert len(bomb) < 1_000_000  # 60 million characters in well under a megabyte
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ExpansionError, match="unpacks its part word/document.xml to [0-9,]+ bytes; the limit is"):
        convert(".docx", bomb)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 5 and peak < 20 * 2**20, (seconds, peak)  # nothing was unpacked


def test_an_uploaded_bomb_is_a_one_line_413_and_stores_nothing(settings, pipeline, tmp_path, bomb):
    s = settings.with_overrides(data_dir=tmp_path / "data")
    with TestClient(create_app(s, pipeline=pipeline)) as client:
        assert client.put("/collections/safe").status_code == 201
        started = time.perf_counter()
        r = client.post("/collections/safe/documents", files={"file": ("report.docx", bomb)})
        assert time.perf_counter() - started < 5
        assert r.status_code == 413 and "\n" not in r.json()["detail"], r.text
        assert r.json()["detail"].startswith("report.docx: unpacks its part word/document.xml")
        assert client.get("/collections/safe/documents").json() == []
        assert client.get("/health").status_code == 200
    assert not any(p.is_file() for p in (tmp_path / "data" / "collections" / "safe").rglob("*.docx"))


def test_each_bound_is_found_before_the_work_it_would_cost():
    """A .docx past the text bound stops converting there; all its parts together are bounded too; a PDF is
    refused by its page count; text that would make too many passages is refused."""
    small = docx_bomb(200_000)
    with pytest.raises(ExpansionError, match="more than 100,000 characters"):
        convert(".docx", small, ConvertOptions(max_chars=100_000))
    assert len(convert(".docx", small).text) > 200_000  # under the default bounds: read
    with pytest.raises(ExpansionError, match="unpacks to [0-9,]+ bytes; the limit is 100,000 a file"):
        convert(".docx", small, ConvertOptions(max_archive_bytes=100_000))
    pdf = make_pdf(["One page.", "Two pages.", "Three pages."])
    with pytest.raises(ExpansionError, match="has 3 pages; the limit is 2 a file"):
        convert(".pdf", pdf, ConvertOptions(max_pdf_pages=2))
    assert convert(".pdf", pdf, ConvertOptions(max_pdf_pages=3)).text.startswith("One page.")
    lines = "".join(f"Line {i} of the log.\n" for i in range(3000)).encode()
    with pytest.raises(ExpansionError, match="makes [0-9,]+ passages; the limit is 10 a file"):
        convert(".txt", lines, ConvertOptions(max_passages=10))
    with pytest.raises(ExpansionError, match="more than 1,000 characters"):
        convert(".md", lines, ConvertOptions(max_chars=1000))


def test_rag_index_skips_a_bomb_with_one_line_and_indexes_the_rest(tmp_path, bomb):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "report.docx").write_bytes(bomb)
    (docs / "note.txt").write_text("The Fastnet Rock lighthouse was completed in 1904.\n")
    started = time.perf_counter()
    out = cli("index", "--docs", docs, "--index", tmp_path / "idx")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert time.perf_counter() - started < 120  # the embedder's start-up; the bomb itself costs nothing
    warnings = [line for line in out.stderr.splitlines() if "report.docx" in line]
    assert len(warnings) == 1 and "skipping report.docx: unpacks its part word/document.xml" in warnings[0]
    assert "indexed 1 document" in out.stdout and "skipped 1:" in out.stdout


def test_an_upload_is_converted_once(settings, pipeline, tmp_path, monkeypatch):
    import rag.ingest.files
    import rag.service.catalog
    from rag.service.catalog import Collections

    calls = []
    for module, name in ((rag.service.catalog, "convert_upload"), (rag.ingest.files, "convert")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, **k: calls.append(a[0]) or real(*a, **k))
    team = Collections(settings.with_overrides(data_dir=tmp_path / "data"), pipeline)
    team.create("once")
    assert team.upload("once", "report.docx", make_docx())["passages"] >= 1
    assert calls == [".docx"]  # converted to check it, and that conversion indexed
    assert team.get("once").ask("How many members did the cooperative have?").answer == "312"
