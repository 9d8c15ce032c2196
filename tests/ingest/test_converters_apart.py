"""Conversion in a process of its own (the server's uploads): the same text and structure as converting
here, the same errors, at a lower priority; small plain text stays in the process."""
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag.ingest.converters import ConversionError, ConvertOptions, ExpansionError, apart, convert

from helpers import REPO
from helpers.documents import make_docx, make_pdf

PAGES = ["The vault under the old bank was built in 1921.", "Its door weighs twelve tonnes and has two locks."]


@pytest.mark.parametrize("suffix, data", [(".pdf", make_pdf(PAGES)), (".docx", make_docx())])
def test_a_child_converts_as_this_process_does(suffix, data):
    options = ConvertOptions(ocr=False)
    assert apart.convert_apart(suffix, data, options, niceness=10) == convert(suffix, data, options)


def test_the_childs_errors_are_raised_here_with_their_messages():
    with pytest.raises(ConversionError) as broken:
        apart.convert_apart(".pdf", b"%PDF-1.4 not really", ConvertOptions(ocr=False), niceness=10)
    assert not isinstance(broken.value, ExpansionError)
    with pytest.raises(ExpansionError, match="page"):
        apart.convert_apart(".pdf", make_pdf(PAGES), ConvertOptions(ocr=False, max_pdf_pages=1), niceness=10)


def test_small_plain_text_converts_here_and_the_rest_apart(monkeypatch):
    seen = {}
    monkeypatch.setattr(apart, "convert_apart", lambda *a: seen.setdefault("apart", a) and None)
    assert apart.convert_upload(".txt", b"small text", ConvertOptions(), niceness=10).text == "small text"
    assert "apart" not in seen
    apart.convert_upload(".pdf", make_pdf(PAGES), ConvertOptions(), niceness=7)
    assert seen.pop("apart")[-1] == 7
    assert apart.convert_upload(".pdf", make_pdf(PAGES), ConvertOptions(ocr=False), niceness=0).format == "pdf"
    assert "apart" not in seen  # niceness 0: here, as any other work of the server


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the child's niceness from /proc")
def test_the_child_lowers_its_own_priority_before_it_converts():
    import json

    child = subprocess.Popen([sys.executable, "-m", "rag.ingest.converters", "7"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, cwd=REPO)
    niceness = set()
    while child.poll() is None and not niceness - {os.nice(0)}:
        with contextlib.suppress(OSError, IndexError):  # gone meanwhile
            niceness.add(int(Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[16]))
    request = json.dumps({"suffix": ".txt", "options": {"ocr": False}}).encode()
    out, _ = child.communicate(request + b"\n" + b"text apart", timeout=60)
    assert os.nice(0) + 7 in niceness, niceness
    assert json.loads(out)["converted"]["text"] == "text apart"
