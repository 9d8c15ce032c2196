"""Ask one collection over HTTP while a large PDF is uploaded into another (issue 40: a 2,000-page PDF took
188 s to upload while asks on another collection took up to 21 s): how long those asks take before and
during the upload (median, 90th percentile, slowest) and how long the upload takes, for each
Settings.indexing_niceness given (0: the upload converts in the server's process at its priority; 10, the
default: in a child process, indexing at a lower priority), with the date, commit and CPU.

A real server (uvicorn in a thread of this process, the app `rag serve` runs) on the committed index;
collections `pdf` (the upload) and `other` (the asks). The PDF's page limit is raised to its page count.

    .venv/bin/python scripts/upload_pdf_ask_bench.py [--pages 2000] [--niceness 0 10]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from rag.config import REPO_DIR, Settings  # noqa: E402
from rag.offline.bench.harness import free_port  # noqa: E402
from rag.pipeline.qa import Pipeline  # noqa: E402
from rag.runtime.cpu import cpu_model  # noqa: E402
from rag.service.server import create_app  # noqa: E402

WORDS = "the keeper logged weather tides ships lamps oil wind rain fog bell crew boat harbour north south".split()
QUESTION = "Who is the harbour master of Inis Mor?"


def logbook_pdf(pages: int, lines: int = 5) -> bytes:
    """A PDF of `pages` pages of log entries (fpdf2), about 0.5 KB of text a page."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=10)
    n = 0
    for _ in range(pages):
        pdf.add_page()
        for _ in range(lines):
            n += 1
            words = " ".join(WORDS[(n + k) % len(WORDS)] for k in range(12))
            pdf.multi_cell(0, 5, f"Entry {n}: on day {n % 365} the keeper of light {n % 97} noted {words}.",
                           new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def ask(client: httpx.Client) -> float:
    started = time.perf_counter()
    r = client.post("/collections/other/ask", json={"question": QUESTION})
    took = time.perf_counter() - started
    assert r.status_code == 200 and r.json()["answer"] == "Sean Ryan", (r.status_code, r.text[:200])
    return took


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else values[0]


def run(data: bytes, pages: int, niceness: int, pipeline: Pipeline) -> dict:
    """One server with this niceness: asks idle, then asks while the PDF uploads."""
    settings = Settings(docs_dir=REPO_DIR / "seeds", index_dir=REPO_DIR / "index", data_dir=Path(tempfile.mkdtemp()),
                        max_pdf_pages=max(pages, Settings.max_pdf_pages), indexing_niceness=niceness)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, pipeline=pipeline), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.1)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    for name in ("pdf", "other"):
        client.put(f"/collections/{name}").raise_for_status()
    client.post("/collections/other/documents", files={"file": ("harbour.txt", b"The harbour master of Inis Mor is "
                b"called Sean Ryan. He took the post in 2019.\n")}).raise_for_status()
    idle = [ask(client) for _ in range(10)]
    result: dict = {}

    def upload():
        started = time.perf_counter()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1800) as uploader:
            result["response"] = uploader.post("/collections/pdf/documents",
                                               files={"file": ("logbook.pdf", data, "application/pdf")})
        result["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=upload)
    thread.start()
    asks = []
    while thread.is_alive():
        asks.append(ask(client))
        time.sleep(0.5)
    thread.join()
    server.should_exit = True
    r = result["response"]
    assert r.status_code == 201, (r.status_code, r.text[:300])
    return {"niceness": niceness, "upload_s": result["seconds"], "passages": r.json()["passages"], "idle": idle,
            "asks": asks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--niceness", type=int, nargs="+", default=[0, 10])
    args = parser.parse_args()
    data = logbook_pdf(args.pages)
    pipeline = Pipeline.from_settings(Settings(docs_dir=REPO_DIR / "seeds", index_dir=REPO_DIR / "index"),
                                      rebuild=False)
    rows = [run(data, args.pages, n, pipeline) for n in args.niceness]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True,
                            text=True).stdout.strip()
    print(f"{time.strftime('%Y-%m-%d')}, commit {commit}; CPU: {cpu_model()}, {os.cpu_count()} cores; reader "
          f"{pipeline.reader.runtime}, embedder {pipeline.retriever.embedder.runtime}; a {args.pages:,}-page PDF "
          f"of {len(data):,} bytes uploaded into `pdf` while `other` is asked")
    print("| indexing_niceness | upload (s) | passages | asks idle: median / max (s) | asks during: n | median | p90 | max (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        a = r["asks"]
        print(f"| {r['niceness']} | {r['upload_s']:.1f} | {r['passages']:,} | {statistics.median(r['idle']):.2f} / "
              f"{max(r['idle']):.2f} | {len(a)} | {statistics.median(a):.2f} | {p90(a):.2f} | {max(a):.2f} |")


if __name__ == "__main__":
    main()
