"""Time from a file saved in a watched folder to the first /ask answer that cites it (issue 39's benchmark):
`rag serve --watch` on a copy of seeds/, then, one trial at a time, a new small file with a fact of its own
is written and /ask is asked about that fact until an answer cites the file; the file is then removed (and
its removal waited for), since facts this alike side by side confuse the reader. Prints the median of the
trials (and min, p90, max) with the CPU model, in a Markdown table.

    .venv/bin/python scripts/watch_latency.py [--trials 20] [--settle 1.0] [--polling]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from rag.offline.bench import free_port, http_json, start_server, stop_server

REPO = Path(__file__).resolve().parent.parent
PLACES = ["Fanad", "Hook Head", "Loop Head", "Mizen", "Baily", "Tory", "Rathlin", "Blackrock", "Eagle Island",
          "Slyne Head", "Galley Head", "Ballycotton", "Wicklow Head", "Kish Bank", "Clare Island", "Inishtrahull",
          "Tuskar Rock", "Mine Head", "Roches Point", "Aranmore", "Valentia", "Skellig", "Inisheer", "Copeland"]
NAMES = ["Aoife Brennan", "Ciaran Doyle", "Niamh Keane", "Tadhg Mulligan", "Saoirse Quinn", "Declan Hurley",
         "Orla Fitzgerald", "Padraig Nolan", "Grainne Walsh", "Eoin Gallagher", "Roisin Daly", "Fergal Lynch",
         "Sinead Moran", "Colm Brady", "Maeve Corcoran", "Donal Egan", "Una Sheridan", "Ruairi Boyle",
         "Clodagh Foley", "Cathal Dunne", "Ailbhe Kenny", "Oisin Ward", "Muireann Ryan", "Lorcan Healy"]


def cpu_model() -> str:
    """The CPU model as lscpu names it (and the cores this process may use)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    except (OSError, subprocess.SubprocessError):
        model = "?"
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def wait_until_quiet(url: str, deadline: float = 120.0) -> None:
    """Until the server's watch has nothing pending and no sync under way."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        _, health = http_json("GET", url + "/health")
        watch = (health or {}).get("watch") or {}
        if watch.get("pending") == 0 and not watch.get("syncing"):
            return
        time.sleep(0.2)
    raise SystemExit("the watch did not fall quiet")


def trial(url: str, docs: Path, i: int, deadline: float = 120.0) -> float:
    """Seconds from writing fact-i.txt to the first /ask answer that cites it."""
    place, name = PLACES[i % len(PLACES)], NAMES[i % len(NAMES)]
    source = f"fact-{i:02d}.txt"
    question = f"Who is the keeper of the {place} lighthouse?"
    started = time.perf_counter()
    (docs / source).write_text(f"The keeper of the {place} lighthouse is called {name}. "
                               f"{name} has kept the {place} light since the spring.\n")
    body = None
    while time.perf_counter() - started < deadline:
        status, body = http_json("POST", url + "/ask", {"question": question})
        if status == 200 and any(c["source"] == source for c in body["citations"]):
            seconds = time.perf_counter() - started
            (docs / source).unlink()
            wait_for_sources(url, lambda names: source not in names)
            return seconds
    _, health = http_json("GET", url + "/health")
    raise SystemExit(f"no answer cited {source} within {deadline:.0f} s; the last answer: {body}; watch: {health.get('watch')}")


def wait_for_sources(url: str, condition, deadline: float = 120.0) -> None:
    """Until the default collection's document names satisfy `condition`."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        _, rows = http_json("GET", url + "/collections/default/documents")
        if condition({r["source"] for r in rows or []}):
            return
        time.sleep(0.2)
    raise SystemExit("the watched folder's index did not follow a removal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--settle", type=float, default=1.0, help="the server's --settle (seconds)")
    parser.add_argument("--polling", action="store_true", help="watch by polling instead of inotify")
    args = parser.parse_args()
    if not 1 <= args.trials <= len(PLACES):
        raise SystemExit(f"--trials must be between 1 and {len(PLACES)}")
    work = Path(tempfile.mkdtemp(prefix="rag-watch-latency-"))
    try:
        docs = work / "docs"
        shutil.copytree(REPO / "seeds", docs)
        port = free_port()
        extra = ("--watch", "--settle", str(args.settle), "--data", str(work / "data"), "--workers", "1",
                 *(("--watch-polling",) if args.polling else ()))
        server = start_server(port, docs=docs, index=work / "index", extra=extra)
        url = f"http://127.0.0.1:{port}"
        try:
            http_json("POST", url + "/ask", {"question": "Who is the keeper of the lighthouse?"})  # warm up
            _, health = http_json("GET", url + "/health")
            mode = health["watch"]["mode"]
            seconds = []
            for i in range(args.trials):
                wait_until_quiet(url)
                seconds.append(trial(url, docs, i))
                print(f"  trial {i + 1:2d}: {seconds[-1]:.2f} s", flush=True)
        finally:
            stop_server(server)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds.sort()
    p90 = seconds[min(len(seconds) - 1, round(0.9 * (len(seconds) - 1)))]
    print(f"\nCPU: {cpu_model()}")
    print("| watch | settle (s) | trials | median (s) | min (s) | p90 (s) | max (s) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {mode} | {args.settle:g} | {len(seconds)} | {statistics.median(seconds):.2f} | {seconds[0]:.2f} | "
          f"{p90:.2f} | {seconds[-1]:.2f} |")


if __name__ == "__main__":
    main()
