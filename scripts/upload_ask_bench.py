"""Ask on a collection while a ~2,000-passage upload of real-size passages re-indexes it (issue 40): how
long the asks take meanwhile (median, slowest), and the slowest listing and /metrics render, with the CPU.

    .venv/bin/python scripts/upload_ask_bench.py
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.config import REPO_DIR, Settings  # noqa: E402
from rag.pipeline.qa import Pipeline  # noqa: E402
from rag.runtime.cpu import cpu_model  # noqa: E402
from rag.service.catalog import Collections  # noqa: E402
from rag.service.metrics import Metrics  # noqa: E402

WORDS = "the keeper logged weather tides ships lamps oil wind rain fog bell crew boat".split()


def main() -> None:
    settings = Settings(docs_dir=REPO_DIR / "seeds", index_dir=REPO_DIR / "index", data_dir=Path(tempfile.mkdtemp()))
    default = Pipeline.from_settings(settings, rebuild=False)
    team = Collections(settings, default)
    team.create("busy")
    team.upload("busy", "harbour.txt", b"The harbour master of Inis Mor is called Sean Ryan. He took the post in 2019.\n")
    text = "\n".join(f"Entry {i}: on day {i % 365} the keeper of light {i % 97} noted "
                     + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(14)) + "." for i in range(9000)).encode()
    result: dict = {}

    def upload():
        started = time.perf_counter()
        result["report"] = team.upload("busy", "logbook.txt", text)
        result["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=upload)
    thread.start()
    time.sleep(3)
    asks, lists, scrapes, metrics = [], [], [], Metrics()
    while thread.is_alive():
        started = time.perf_counter()
        answer = team.get("busy").ask("Who is the harbour master of Inis Mor?")
        asks.append(time.perf_counter() - started)
        assert answer.answer == "Sean Ryan", answer.answer
        started = time.perf_counter()
        team.listing()
        lists.append(time.perf_counter() - started)
        started = time.perf_counter()
        metrics.render(team, default)
        scrapes.append(time.perf_counter() - started)
        time.sleep(1)
    thread.join()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; upload of {len(text):,} bytes")
    print(f"upload: {result['report']['passages']} passages in {result['seconds']:.1f} s")
    print(f"asks during it: n={len(asks)} median {statistics.median(asks):.2f} s, max {max(asks):.2f} s")
    print(f"listings: max {max(lists) * 1000:.1f} ms; scrapes: max {max(scrapes) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
