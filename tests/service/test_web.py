"""The web page at /: served with a strict Content-Security-Policy, documents only from the index, and
checked in a real headless browser (Debian's Chromium driven by Playwright) against the real server."""
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from rag.offline.bench import free_port, start_server, stop_server
from rag.service.server import create_app

from helpers import REPO

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
SEED_QUESTION = "Who did Anthropic hire to lead its infrastructure effort?"
SCREENSHOT = REPO / "docs" / "web-page.png"


@pytest.fixture(scope="module")
def client(settings, pipeline):
    with TestClient(create_app(settings, pipeline=pipeline)) as c:
        yield c


def test_page_and_its_files_carry_a_csp_that_forbids_inline_scripts(client):
    for path in ("/", "/static/app.js", "/static/style.css", "/documents/001_fa8838ea44d7c2c5.txt"):
        r = client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
    html = client.get("/").text
    assert '<script src="/static/app.js"' in html and "<script>" not in html and "http" not in html.split("</head>")[0]


@pytest.mark.parametrize("path", [
    "/documents/../README.md", "/documents/%2e%2e/README.md", "/documents/..%2fREADME.md", "/documents//etc/passwd",
    "/documents/%2Fetc%2Fpasswd", "/documents/seeds/001_fa8838ea44d7c2c5.txt", "/documents/nothing.txt",
    "/api/documents/../../pyproject.toml", "/api/documents/%2e%2e%2fpyproject.toml", "/api/documents//etc/passwd",
    "/api/documents/nothing.txt", "/static/../server.py", "/static/%2e%2e/server.py",
])
def test_only_indexed_documents_can_be_opened(client, path):
    r = client.get(path)
    assert r.status_code == 404, path
    assert "root:" not in r.text and "[project]" not in r.text and "FastAPI" not in r.text


def test_document_api_returns_the_indexed_text(client, pipeline):
    source = "001_fa8838ea44d7c2c5.txt"
    body = client.get(f"/api/documents/{quote(source)}").json()
    assert body == {"source": source, "text": pipeline.documents[source].text, "format": "text", "pages": [],
                    "ocr_pages": []}


# --- In a real browser ---------------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install -y chromium); browser tests skipped")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium found (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def seed_server(settings):
    port = free_port()
    proc = start_server(port, settings.docs_dir, settings.index_dir)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


def ask_in_page(page, question: str, wait_for: str = "#answer") -> None:
    """Type a question into the page, press Enter, and wait for what should come back."""
    page.fill("#question", question)
    page.press("#question", "Enter")
    page.wait_for_selector(wait_for, timeout=60_000)


@pytest.fixture()
def page(browser):
    context = browser.new_context()
    p = context.new_page()
    errors = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.errors = errors
    yield p
    context.close()


@needs_chromium
def test_ask_a_seed_question_and_follow_the_citation(page, seed_server, tmp_path):
    page.goto(seed_server + "/")
    ask_in_page(page, SEED_QUESTION)
    assert page.inner_text(".answer-text") == "Eric Boyd"
    assert page.inner_text("#quote mark") == "Eric Boyd"
    assert "Eric Boyd" in page.inner_text("#quote") and "Microsoft" in page.inner_text("#quote")
    assert page.inner_text("#confidence").split(", ")[0] in ("likely right", "probably right", "uncertain")
    link = page.locator(".citation a")
    href = link.get_attribute("href")
    assert href.startswith("/documents/001_fa8838ea44d7c2c5.txt?start=")
    assert page.locator(".passages-box").get_attribute("open") is None  # the passages are collapsed
    page.set_viewport_size({"width": 1000, "height": 620})
    # The docs' picture of the page: remade into docs/ only when asked (RAG_UPDATE_SCREENSHOT=1), so that a
    # run of the suite leaves the checkout as it found it.
    shot = SCREENSHOT if os.environ.get("RAG_UPDATE_SCREENSHOT") == "1" else tmp_path / SCREENSHOT.name
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    link.click()
    page.wait_for_selector("#cited")
    assert page.inner_text("#cited") == "Eric Boyd"
    assert page.inner_text("#document-title") == "001_fa8838ea44d7c2c5.txt"
    box = page.locator("#cited").bounding_box()
    viewport = page.viewport_size
    assert box and 0 <= box["y"] <= viewport["height"], "the highlight is scrolled into view"
    assert not page.errors


@needs_chromium
def test_an_unanswerable_question_shows_the_abstention(page, seed_server):
    page.goto(seed_server + "/")
    page.fill("#question", "What is the capital of France?")
    page.click("#ask-button")
    page.wait_for_selector("#abstain", timeout=60_000)
    assert page.inner_text(".abstain-title") == "The documents do not say."
    assert page.locator(".closest li").count() >= 1
    assert page.locator("#answer").count() == 0


@needs_chromium
def test_api_errors_are_shown_as_a_message(page, seed_server):
    page.goto(seed_server + "/")
    ask_in_page(page, " ".join(["a"] * 300), "#error")  # under 1,000 characters, over the 96-token limit
    text = page.inner_text("#error")
    assert "HTTP 422" in text and "tokens" in text
    assert not page.locator("#ask-button").is_disabled()


@needs_chromium
def test_script_in_a_document_is_shown_not_run(page, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "evil.txt").write_text(
        "The vault code is 4471. <script>window.pwned = 1</script> "
        '<img src=x onerror="window.pwned = 2"> The vault was built in 1921 by the Harland company.\n')
    port = free_port()
    proc = start_server(port, docs, tmp_path / "index")
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        ask_in_page(page, "Who built the vault?", "#answer, #abstain")
        page.locator(".passages-box summary").click()
        assert "<script>window.pwned = 1</script>" in page.inner_text(".passages")
        page.goto(f"http://127.0.0.1:{port}/documents/evil.txt?start=0&end=12")
        page.wait_for_selector("#cited")
        assert '<img src=x onerror="window.pwned = 2">' in page.inner_text("#document-text")
        assert page.evaluate("window.pwned") is None
        assert page.locator("#document-text img, #document-text script").count() == 0
    finally:
        stop_server(proc)


CREW = ("Crew list 🚀 for the Vega flight 🚀.\nThe rocket Vega 🚀 was launched from Kourou in March 2031. Its commander, "
        "the pilot Mira Sol, flew the rocket over the bay before landing at the coast.\n")


@needs_chromium
def test_highlights_stay_on_the_answer_after_astral_characters(page, tmp_path):
    """Offsets count code points (Python's); an emoji is two UTF-16 units in the page's strings, so every
    highlight after one used to land early ("t Mira S" for "Mira Sol"). Three emoji stand before the answer."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "crew.txt").write_text(CREW)
    port = free_port()
    proc = start_server(port, docs, tmp_path / "index")
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        ask_in_page(page, "Where was the rocket Vega launched from?")
        assert page.inner_text(".answer-text") == "Kourou"
        assert page.inner_text("#quote mark") == "Kourou"
        page.locator(".citation a").click()
        page.wait_for_selector("#cited")
        assert page.inner_text("#cited") == "Kourou"
        for words in ("Mira Sol", "coast.\n"):  # a citation's offsets as the API gives them, the last character too
            start = CREW.index(words)
            page.goto(f"http://127.0.0.1:{port}/documents/crew.txt?start={start}&end={start + len(words)}")
            page.wait_for_selector("#cited")
            assert page.inner_text("#cited").strip() == words.strip()
        assert not page.errors
    finally:
        stop_server(proc)


@needs_chromium
def test_the_team_panel_uploads_asks_in_the_new_collection_and_deletes(page, settings, tmp_path):
    """Create a collection, drop a file in it (the file input), ask there, then delete the file."""
    port = free_port()
    proc = start_server(port, settings.docs_dir, settings.index_dir, extra=("--data", str(tmp_path / "data")))
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#collection option", state="attached")
        page.fill("#new-collection", "harbour")
        page.click("#create-collection")
        page.wait_for_selector("#collection option[value=harbour]", state="attached")
        assert page.locator("#collection").input_value() == "harbour"
        page.locator("#file-input").set_input_files(files=[{"name": "harbour.txt", "mimeType": "text/plain",
            "buffer": b"The harbour master of Inis Mor is called Sean Ryan. He took the post in 2019.\n"}])
        page.wait_for_selector("#document-list li", timeout=60_000)
        assert "harbour.txt" in page.inner_text("#document-list") and "answerable now" in page.inner_text("#team-status")
        page.locator("#file-input").set_input_files(files=[{"name": "broken.pdf", "mimeType": "application/pdf",
                                                            "buffer": b"not a pdf"}])
        page.locator("#team-status.error").wait_for(timeout=60_000)
        assert "broken.pdf was refused (HTTP 422)" in page.inner_text("#team-status")
        ask_in_page(page, "Who is the harbour master of Inis Mor?")
        assert page.inner_text(".answer-text") == "Sean Ryan"
        assert "collection=harbour" in page.locator(".citation a").get_attribute("href")
        page.once("dialog", lambda dialog: dialog.accept())  # "Delete harbour.txt from harbour?"
        page.locator("#document-list li button.delete").click()
        page.locator("#document-list li").first.wait_for(state="detached", timeout=60_000)
        assert page.inner_text("#document-count") == "0" and "Deleted harbour.txt" in page.inner_text("#team-status")
        assert not page.errors
    finally:
        stop_server(proc)


@needs_chromium
def test_wrong_then_select_the_right_words_stores_the_correction(page, settings, tmp_path):
    """Click "Wrong" under an answer, open the document, select the right words, press "This is the answer":
    the record is in the data folder's SQLite, with the words quoted from the indexed text."""
    import sqlite3

    data = tmp_path / "data"
    port = free_port()
    proc = start_server(port, settings.docs_dir, settings.index_dir, extra=("--data", str(data)))
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        ask_in_page(page, SEED_QUESTION)
        page.click("#feedback-wrong")
        page.locator("#feedback-status", has_text="select the right words").wait_for(timeout=30_000)
        source = "001_fa8838ea44d7c2c5.txt"
        text = (settings.docs_dir / source).read_text(encoding="utf-8")
        start = text.index("a former Microsoft executive")
        end = start + len("a former Microsoft executive")
        page.goto(f"http://127.0.0.1:{port}/documents/{source}?start={start}&end={end}&collection=default")
        page.wait_for_selector("#cited")
        page.locator("#cited").select_text()  # the user's selection: the right words
        page.click("#mark-answer")
        page.locator("#feedback-status", has_text="Stored").wait_for(timeout=30_000)
        assert "“a former Microsoft executive” answers it" in page.inner_text("#feedback-status")
        assert not page.errors
    finally:
        stop_server(proc)
    rows = sqlite3.connect(data / "feedback.sqlite").execute(
        "SELECT question, answer, verdict, correct_source, correct_start, correct_end, correct_quote FROM feedback ORDER BY id").fetchall()
    assert rows[0][:3] == (SEED_QUESTION, "Eric Boyd", "wrong") and rows[0][3] is None
    assert rows[1] == (SEED_QUESTION, "Eric Boyd", "wrong", source, start, end, "a former Microsoft executive")
