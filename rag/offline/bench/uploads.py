"""`rag bench uploads`: upload-to-answerable time of a real `rag serve` for three kinds of file (a one-page
text, a 20-page PDF, a 1 MB text), on the file store and, with --store, on PostgreSQL. An upload is
answerable when POST /collections/NAME/documents returns 201; each is then asked a question it answers."""
from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

from rag.offline.bench.harness import free_port, http_json, start_server, stop_server
from rag.runtime.cpu import cpu_model, flags_summary

PAGE = ("The harbour master of Inis Mor is called Sean Ryan. He took the post in 2019 after twenty years at sea. "
        "The harbour has berths for forty boats, and the ferry from Rossaveal arrives every morning at nine. ")
QUESTION = ("Who is the harbour master of Inis Mor?", "Sean Ryan")


def _filler(n_chars: int) -> str:
    """Prose of about n_chars, made of numbered sentences (distinct, so every passage is embedded)."""
    sentences, size, i = [], 0, 0
    while size < n_chars:
        sentence = (f"Entry {i}: the survey of pier {i % 97} in {1900 + i % 120} found the tide gauge at "
                    f"{i % 13} metres and the lamp of beacon {i % 31} in working order. ")
        sentences.append(sentence)
        size += len(sentence)
        i += 1
    return "".join(sentences)


def _pdf(pages: int) -> bytes:
    """A text PDF of `pages` pages (fpdf2, from the bench extra), the answer on the last page."""
    try:
        from fpdf import FPDF
    except ImportError as err:
        raise RuntimeError("the PDF case needs fpdf2: pip install 'rag[bench]'") from err
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for page in range(pages):
        pdf.add_page()
        text = PAGE if page == pages - 1 else _filler(2500)
        pdf.multi_cell(0, 5, text)
    return bytes(pdf.output())


def cases() -> list[tuple[str, str, bytes]]:
    """(label, file name, bytes) of the three uploads."""
    one_page = (_filler(2500) + PAGE).encode()
    big = (_filler(1_000_000) + PAGE).encode()
    return [("1-page text", "page.txt", one_page), ("20-page PDF", "report.pdf", _pdf(20)), ("1 MB text", "big.txt", big)]


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = f"rag-bench-{time.time_ns()}"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _upload(url: str, name: str, data: bytes) -> tuple[int, float]:
    import urllib.request

    body, kind = _multipart(name, data)
    request = urllib.request.Request(url, data=body, method="POST", headers={"content-type": kind})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        status = response.status
        response.read()
    return status, time.perf_counter() - started


def run_upload_benchmark(workdir: Path, store: str | None = None, rounds: int = 3, seeds: Path = Path("seeds")) -> str:
    """The table: for each store and file, the median of `rounds` upload-to-answerable times."""
    stores = [("files", None)] + ([("postgresql", store)] if store else [])
    uploads = cases()
    rows = []
    for label, dsn in stores:
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        port = free_port()
        proc = start_server(port, docs=seeds, index=None if dsn else workdir / "default-index",
                            extra=("--data", str(workdir / "data")), store=dsn)
        base = f"http://127.0.0.1:{port}"
        try:
            for kind, name, data in uploads:
                seconds, passages, answered = [], 0, None
                for r in range(rounds):
                    collection = f"bench-{r}"
                    http_json("PUT", f"{base}/collections/{collection}")
                    status, took = _upload(f"{base}/collections/{collection}/documents", name, data)
                    assert status == 201, status
                    answer = http_json("POST", f"{base}/collections/{collection}/ask", {"question": QUESTION[0]})[1]
                    assert any(p["source"] == name for p in answer["passages"]), answer  # read from the new file
                    answered = answer["answer"]
                    passages = http_json("GET", f"{base}/collections/{collection}/documents")[1][0]["passages"]
                    http_json("DELETE", f"{base}/collections/{collection}")
                    seconds.append(took)
                rows.append(f"| {kind} | {label} | {len(data) / 1024:,.0f} | {passages} | {statistics.median(seconds):.2f} |"
                            f" {min(seconds):.2f}–{max(seconds):.2f} | {answered} |")
        finally:
            stop_server(proc)
    return "\n".join([
        f"machine: {cpu_model()}, {os.cpu_count()} cores ({flags_summary()}); {rounds} uploads of each file into a fresh"
        " collection (the first document of its index); answerable = 201 returned, then asked",
        "",
        f"| file | store | KiB | passages | upload → answerable, median (s) | range (s) | answer to {QUESTION[0]!r} |",
        "|---|---|---:|---:|---:|---:|---|",
        *rows,
    ])
