"""Feedback and metrics against a real `rag serve`: verdicts on an answer and on an abstention, a corrected
span checked against the indexed text, feedback that survives a restart, its export read back by `rag eval
--squad`, and /metrics counters that move by exactly the requests made."""
import json
import re
import sqlite3

import pytest

from helpers import cli
from helpers.rag_server import Server

pytestmark = pytest.mark.slow  # every test talks to a `rag serve` child process

QUESTION = "Who did Anthropic hire to lead its infrastructure effort?"
SOURCE = "001_fa8838ea44d7c2c5.txt"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tmp_path_factory.mktemp("feedback") / "data"


def _metric(text: str, name: str, **labels) -> float:
    """One sample's value from the Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{{{re.escape(wanted)}}} (\S+)$" if labels else rf"^{re.escape(name)} (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def test_feedback_is_checked_stored_counted_and_survives_a_restart(data):
    server = Server(data)
    try:
        before = server.call("GET", "/metrics").text
        answer = server.call("POST", "/ask", json={"question": QUESTION}).json()
        abstention = server.call("POST", "/ask", json={"question": "What is the capital of France?"}).json()
        assert answer["answer"] == "Eric Boyd" and abstention["answer"] is None
        cite = answer["citations"][0]
        right = server.call("POST", "/feedback", json={
            "question": QUESTION, "answer": "Eric Boyd", "verdict": "right", "score": answer["score"],
            "cited": {"source": cite["source"], "start": cite["start"], "end": cite["end"]}})
        assert right.status_code == 201 and right.json()["id"] >= 1
        none = server.call("POST", "/feedback", json={"question": "What is the capital of France?", "answer": None,
                                                       "verdict": "right", "score": abstention["score"]})
        assert none.status_code == 201
        text = server.call("GET", f"/api/documents/{SOURCE}").json()["text"]
        start = text.index("a former Microsoft executive")
        corrected = server.call("POST", "/feedback", json={
            "question": "Who did Anthropic hire from Microsoft?", "answer": "Andrej Karpathy", "verdict": "wrong",
            "correct": {"source": SOURCE, "start": start, "end": start + len("a former Microsoft executive, Eric Boyd")}})
        assert corrected.status_code == 201
        for bad in [{"source": SOURCE, "start": 10, "end": 5}, {"source": SOURCE, "start": 0, "end": len(text) + 1},
                    {"source": "nothing.txt", "start": 0, "end": 3}, {"source": SOURCE, "start": "0", "end": 3}]:
            r = server.call("POST", "/feedback", json={"question": "Q?", "answer": None, "verdict": "wrong", "correct": bad})
            assert r.status_code == 422, bad
        assert server.call("POST", "/feedback", json={"question": "Q?", "answer": "x", "verdict": "maybe"}).status_code == 422
        after = server.call("GET", "/metrics").text
        assert _metric(after, "rag_answers_total", outcome="answered") - _metric(before, "rag_answers_total", outcome="answered") == 1
        assert _metric(after, "rag_answers_total", outcome="abstained") - _metric(before, "rag_answers_total", outcome="abstained") == 1
        assert _metric(after, "rag_feedback_total", verdict="right") == 2 and _metric(after, "rag_feedback_total", verdict="wrong") == 1
        assert _metric(after, "rag_requests_total", route="/feedback", status="201") == 3
        assert _metric(after, "rag_requests_total", route="/feedback", status="422") == 5
        assert _metric(after, "rag_requests_total", route="/ask", status="200") == 2
        assert _metric(after, "rag_requests_total", route="/metrics", status="200") == 1  # the first scrape
        assert _metric(after, "rag_ask_seconds_count") == 2 and _metric(after, "rag_reader_forward_seconds_count") == 2
        assert _metric(after, "rag_collection_documents", collection="default") == 5
        assert _metric(after, "rag_collection_passages", collection="default") == 37
        assert 'rag_runtime_info{embedder="' in after
    finally:
        server.stop()
    rows = sqlite3.connect(data / "feedback.sqlite").execute(
        "SELECT verdict, answer, correct_quote, reader FROM feedback ORDER BY id").fetchall()
    assert rows[2][2] == "a former Microsoft executive, Eric Boyd" and rows[0][:2] == ("right", "Eric Boyd")
    assert re.fullmatch(r"packaged:[0-9a-f]{12}", rows[0][3])  # the reader version that answered
    restarted = Server(data)
    try:
        assert restarted.call("POST", "/feedback", json={"question": "Q2?", "answer": None, "verdict": "wrong"}).status_code == 201
    finally:
        restarted.stop()
    assert len(sqlite3.connect(data / "feedback.sqlite").execute("SELECT id FROM feedback").fetchall()) == 4


def test_the_export_is_read_back_by_rag_eval(data, tmp_path):
    out = cli("feedback", "export", "--data", data, "--squad", tmp_path / "team.json")
    assert out.returncode == 0, out.stderr
    squad = json.loads((tmp_path / "team.json").read_text())
    qas = {qa["question"]: qa for a in squad["data"] for p in a["paragraphs"] for qa in p["qas"]}
    assert qas[QUESTION]["answers"][0]["text"] == "Eric Boyd" and qas["What is the capital of France?"]["is_impossible"]
    assert qas["Who did Anthropic hire from Microsoft?"]["answers"][0]["text"] == "a former Microsoft executive, Eric Boyd"
    assert "Q2?" not in qas  # "wrong" with no correction gives no label
    for article in squad["data"]:
        context = article["paragraphs"][0]["context"]
        for qa in article["paragraphs"][0]["qas"]:
            for a in qa["answers"]:
                assert context[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]
    evaluated = cli("eval", "--squad", tmp_path / "team.json", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["n"] == 3
    stats = cli("feedback", "stats", "--data", data)
    assert stats.returncode == 0 and "4 verdicts: 2 right, 2 wrong" in stats.stdout and "score bin" in stats.stdout


def test_metrics_need_a_key_when_keys_exist_unless_public(tmp_path):
    data = tmp_path / "data"
    token = cli("keys", "add", "ops", "--scope", "read", "--data", data).stdout.strip().splitlines()[-1]
    server = Server(data)
    try:
        assert server.call("GET", "/metrics").status_code == 401
        assert server.call("GET", "/metrics", token=token).status_code == 200
        assert server.call("POST", "/feedback", json={"question": "Q?", "answer": None, "verdict": "right"}).status_code == 401
        assert server.call("POST", "/feedback", token=token,
                           json={"question": "Q?", "answer": None, "verdict": "right"}).status_code == 201
    finally:
        server.stop()
    public = Server(data, "--metrics-public")
    try:
        assert public.call("GET", "/metrics").status_code == 200
        assert public.call("GET", "/collections").status_code == 401
    finally:
        public.stop()


def test_bad_feedback_is_a_422_that_says_why_and_posts_are_limited(tmp_path):
    """Offsets past what the tables hold, a boolean score, "right" on an answer without where it was cited,
    and a citation that is not the answer in the index: each a one-line 422 and nothing stored. Then a key's
    posts a minute and a collection's verdicts are bounded, with a 429 that says which."""
    data = tmp_path / "data"
    alice = cli("keys", "add", "alice", "--scope", "read", "--data", data).stdout.strip().splitlines()[-1]
    bob = cli("keys", "add", "bob", "--scope", "read", "--data", data).stdout.strip().splitlines()[-1]
    server = Server(data, "--workers", "1", "--feedback-per-minute", "4", "--feedback-cap", "6")
    try:
        answer = server.call("POST", "/ask", alice, json={"question": QUESTION}).json()
        cite = {k: answer["citations"][0][k] for k in ("source", "start", "end")}
        right = {"question": QUESTION, "answer": answer["answer"], "verdict": "right", "score": answer["score"], "cited": cite}
        for bad, fragment in [
            ({**right, "cited": {**cite, "end": 2**63 + 1}}, "cited.end"),
            ({**right, "cited": {**cite, "start": -1}}, "cited.start"),
            ({"question": "Q?", "answer": None, "verdict": "wrong", "correct": {"source": SOURCE, "start": 2**64, "end": 2**64 + 3}},
             "correct.start"),
            ({**right, "score": False}, "score"),
            ({**right, "score": "0.9"}, "score"),
            ({**right, "cited": None}, "cited"),  # "right" on an answer, nowhere to label it
            ({k: v for k, v in right.items() if k != "cited"}, "cited"),
            ({**right, "answer": None}, "abstention"),
            ({**right, "cited": {**cite, "start": cite["start"] + 1}}, "not the answer"),  # not what the index says there
            ({**right, "cited": {**cite, "source": "nothing.txt"}}, "cited.source"),
        ]:
            r = server.call("POST", "/feedback", alice, json=bad)
            assert r.status_code == 422 and fragment in r.json()["detail"], (bad, r.text)
            assert "\n" not in r.json()["detail"]
        assert not (data / "feedback.sqlite").exists() or not sqlite3.connect(data / "feedback.sqlite").execute(
            "SELECT id FROM feedback").fetchall()
        for _ in range(4):
            assert server.call("POST", "/feedback", alice, json=right).status_code == 201
        limited = server.call("POST", "/feedback", alice, json=right)
        assert limited.status_code == 429 and "4 verdicts a minute per key" in limited.json()["detail"]
        assert 1 <= int(limited.headers["retry-after"]) <= 61
        assert [server.call("POST", "/feedback", bob, json=right).status_code for _ in range(3)] == [201, 201, 429]
        full = server.call("POST", "/feedback", bob, json=right)
        assert full.status_code == 429 and "its cap of 6" in full.json()["detail"] and "retry-after" not in full.headers
    finally:
        server.stop()
    assert len(sqlite3.connect(data / "feedback.sqlite").execute("SELECT id FROM feedback").fetchall()) == 6
