"""Scanned pages and tables: a two-page image-only PDF read by real OCR (RapidOCR, no mock) with its page
citations, an HTML and a PDF table rendered row by row under their headers, answered from the cell, with
offsets that still slice exactly; OCR off or missing skips the scan with its reason."""
import json

import pytest

from helpers import cli
from helpers.scans import write_scan_pdf, write_table_html, write_table_pdf

pytestmark = pytest.mark.slow  # real OCR of scanned pages

pytest.importorskip("rapidocr", reason="the ocr extra (pip install 'rag[ocr]') is part of the test install")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    docs = tmp_path_factory.mktemp("scans") / "docs"
    docs.mkdir()
    write_scan_pdf(docs / "harbour-report.pdf")
    write_table_html(docs / "lakes.html")
    write_table_pdf(docs / "ferries.pdf")
    return docs


@pytest.fixture(scope="module")
def pipeline(folder, tmp_path_factory):
    from rag import Pipeline

    with Pipeline.from_folder(folder, index=tmp_path_factory.mktemp("index") / "index") as p:
        yield p


def test_the_folder_indexes_with_no_skip_and_the_scan_is_marked_as_read_by_ocr(pipeline):
    docs = pipeline.documents
    assert sorted(docs) == ["ferries.pdf", "harbour-report.pdf", "lakes.html"]
    scan = docs["harbour-report.pdf"]
    assert scan.format == "pdf" and scan.ocr_pages == (1, 2) and len(scan.pages) == 2
    assert "Galway Marine Works" in scan.text and "Flaherty" in scan.text
    assert docs["ferries.pdf"].ocr_pages == () and docs["lakes.html"].ocr_pages == ()
    assert "Lake: Erie; Maximum depth (m): 64; Volume (km3): 484;" in docs["lakes.html"].text
    assert "Ferry: Star of Doolin; Home port: Doolin; Crossing (minutes): 35;" in docs["ferries.pdf"].text


@pytest.mark.parametrize(("question", "answer", "source", "page", "ocr"), [
    ("Who repaired the breakwater?", "Galway Marine Works", "harbour-report.pdf", 2, True),
    ("Who is the chair of the harbour board?", "Brid Flaherty", "harbour-report.pdf", 1, True),
    ("What is the maximum depth of Lake Erie?", "64", "lakes.html", None, False),
    ("How many minutes does the Star of Doolin take to cross?", "35", "ferries.pdf", 1, False),
])
def test_a_question_answered_only_by_the_scan_or_a_table_cell(pipeline, question, answer, source, page, ocr):
    result = pipeline.ask(question)
    assert result.answer == answer
    cite = result.citations[0]
    assert (cite.source, cite.page, cite.ocr) == (source, page, ocr)
    assert pipeline.documents[source].text[cite.start : cite.end] == answer


def test_ocr_off_or_missing_skips_the_scan_with_the_reason(folder, tmp_path, monkeypatch):
    from rag.ingest.converters import ConvertOptions
    from rag.ingest.files import load_corpus

    off = load_corpus(folder, options=ConvertOptions(ocr=False))
    assert "OCR is off" in off.skipped["harbour-report.pdf"] and len(off.documents) == 2
    import rag.ingest.ocr

    monkeypatch.setattr(rag.ingest.ocr, "available", lambda: False)  # the extra not installed: say how to get it
    missing = load_corpus(folder)
    assert "pip install 'rag[ocr]'" in missing.skipped["harbour-report.pdf"]


def test_the_api_and_the_cli_say_read_by_ocr(folder, tmp_path):
    from fastapi.testclient import TestClient

    from rag.config import Settings
    from rag.service.server import create_app

    settings = Settings(docs_dir=folder, index_dir=tmp_path / "index", data_dir=tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        answer = client.post("/ask", json={"question": "Who repaired the breakwater?"}).json()
        assert answer["answer"] == "Galway Marine Works" and answer["citations"][0]["ocr"] is True
        doc = client.get("/api/documents/harbour-report.pdf").json()
        assert doc["format"] == "pdf" and doc["ocr_pages"] == [1, 2] and len(doc["pages"]) == 2
    r = cli("ask", "--docs", folder, "--index", tmp_path / "index", "Who repaired the breakwater?")
    assert r.returncode == 0 and "page 2, read by OCR" in r.stdout, r.stdout + r.stderr
    r = cli("ask", "--docs", folder, "--index", tmp_path / "index", "--json", "Who repaired the breakwater?")
    assert json.loads(r.stdout)["citations"][0]["ocr"] is True
    assert "\x1b" not in r.stdout + r.stderr  # RapidOCR's coloured log never reaches the terminal
