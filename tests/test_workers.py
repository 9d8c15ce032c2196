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
    finally:
        server.stop()
