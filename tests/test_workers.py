"""`rag serve --workers 2`: two processes on one port, each with its own models, that agree on what the
collections hold (an upload or delete through one is seen by the other) and whose /metrics add up."""
import re

from test_team import HARBOUR, Server


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

    from conftest import REPO

    out = subprocess.run([sys.executable, "-m", "rag.cli", "serve", "--workers", "2", "--docs", str(tmp_path / "missing"),
                          "--index", str(tmp_path / "index"), "--data", str(tmp_path / "data")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("rag: error: ") and "missing" in out.stderr
