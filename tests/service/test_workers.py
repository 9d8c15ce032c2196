"""`rag serve --workers 2`: two processes on one port, each with its own models, that agree on what the
collections hold (an upload or delete through one is seen by the other) and whose /metrics add up."""
import re

import pytest

from helpers.rag_server import HARBOUR, Server

pytestmark = pytest.mark.slow  # `rag serve --workers`: child processes that each load the models


def _count(text: str, route: str, status: str) -> float:
    found = re.search(rf'^rag_requests_total{{route="{re.escape(route)}",status="{status}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_two_workers_share_collections_and_metrics(tmp_path):
    server = Server(tmp_path / "data", "--workers", "2")
    try:
        for _ in range(6):
            r = server.call("POST", "/ask", json={"question": "Who did Anthropic hire to lead its infrastructure effort?"})
            assert r.status_code == 200 and r.json()["answer"] == "Eric Boyd"
        assert server.call("PUT", "/collections/harbour").status_code == 201
        assert server.upload("harbour", "harbour.txt", HARBOUR).status_code == 201
        for _ in range(8):  # whichever worker takes it, the upload is there
            r = server.call("POST", "/collections/harbour/ask", json={"question": "Who is the harbour master of Inis Mor?"})
            assert r.status_code == 200 and r.json()["answer"] == "Sean Ryan", r.text
            names = [c["name"] for c in server.call("GET", "/collections").json()]
            assert names == ["default", "harbour"]
        assert server.call("DELETE", "/collections/harbour").status_code == 204
        for _ in range(8):
            assert server.call("POST", "/collections/harbour/ask", json={"question": "Who?"}).status_code == 404
            assert [c["name"] for c in server.call("GET", "/collections").json()] == ["default"]
        metrics = server.call("GET", "/metrics").text
        assert _count(metrics, "/ask", "200") == 6  # summed over both workers
        assert _count(metrics, "/collections/{name}/ask", "200") == 8
        assert _count(metrics, "/collections/{name}/ask", "404") == 8
        assert "2 workers" in server.log.read_text()
        # The parent only supervises: the index was checked and the models loaded in a child that has exited.
        rss_kib = int(re.search(r"^VmRSS:\s+(\d+) kB", open(f"/proc/{server.proc.pid}/status").read(), re.M).group(1))
        assert rss_kib < 250 * 1024, rss_kib  # 89 MB measured (it held ~800 MB when it loaded the models)
    finally:
        server.stop()


def test_a_worker_server_that_cannot_start_says_why_in_one_line(tmp_path):
    import subprocess
    import sys

    from helpers import REPO

    out = subprocess.run([sys.executable, "-m", "rag.cli", "serve", "--workers", "2", "--docs", str(tmp_path / "missing"),
                          "--index", str(tmp_path / "index"), "--data", str(tmp_path / "data")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("rag: error: ") and "missing" in out.stderr


def _children(pid: int) -> list[int]:
    found = []
    for stat in __import__("glob").glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


def _cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read()
    except OSError:
        return ""


def test_a_sigterm_while_preparing_the_workers_ends_the_preparing_child_too(tmp_path):
    """The child that indexes and loads the models before the workers start is not left behind, still
    indexing, when the parent is told to stop (a service manager's SIGTERM)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from rag.offline.bench import free_port

    from helpers import REPO

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "harbour.txt").write_bytes(HARBOUR)
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--workers", "2", "--docs", str(docs),
                             "--index", str(tmp_path / "index"), "--data", str(tmp_path / "data"), "--port", str(free_port())],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        def preparing() -> list[int]:  # the spawned child, not multiprocessing's resource tracker
            return [c for c in _children(proc.pid) if "spawn_main" in _cmdline(c)]

        while not (children := preparing()) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert children, proc.stderr.read() if proc.poll() is not None else "no preparing child seen"
        time.sleep(1)  # it is importing the models now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) != 0 and "Traceback" not in proc.stderr.read()
        deadline = time.time() + 10
        while any(os.path.exists(f"/proc/{c}") and open(f"/proc/{c}/stat").read().split()[2] != "Z" for c in children):
            assert time.time() < deadline, "the preparing child outlived its parent"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
