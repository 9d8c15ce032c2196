"""The real shipped reader on the seed articles: answers with exact offsets, or abstains."""
import json

import pytest

from rag.reader import Reader

from conftest import REPO, cli

ANSWERABLE = [
    ("Who did Anthropic hire to lead its infrastructure effort?", "Eric Boyd", "001_fa8838ea44d7c2c5.txt"),
    ("What feature did Anthropic launch for enterprise clients?", "Managed Agents", "001_fa8838ea44d7c2c5.txt"),
    ("When did Karpathy announce his move to Anthropic?", "May 2026", "004_81a3bf9f650335dc.txt"),
]
UNANSWERABLE = ["What is the capital of France?", "Who wrote Pride and Prejudice?"]


def assert_citations_exact(answer, documents):
    assert answer.citations, "an answer must be cited"
    for c in answer.citations:
        text = documents[c.source].text
        assert text[c.start : c.end] == answer.answer
        assert answer.answer in c.quote and text[c.quote_start : c.quote_start + len(c.quote)] == c.quote


@pytest.mark.parametrize("question,expected,source", ANSWERABLE)
def test_answers_seed_questions_with_exact_citations(pipeline, question, expected, source):
    answer = pipeline.run(question)
    assert answer.answer is not None and expected in answer.answer
    assert answer.citations[0].source == source
    assert 0.0 <= answer.score <= 1.0 and answer.score >= pipeline.threshold
    assert_citations_exact(answer, pipeline.documents)


LONG_SPAN = pytest.mark.xfail(strict=True, reason=(
    "measured with the v5 reader: it answers 'new features like Managed Agents' (v4: 'Managed Agents'); "
    "strict, so a reader that finds the exact span again shows up"))


@pytest.mark.parametrize("question,expected", [
    pytest.param(q, a, marks=LONG_SPAN) if a == "Managed Agents" else (q, a) for q, a, _ in ANSWERABLE])
def test_answers_are_exactly_the_gold_span(pipeline, question, expected):
    assert pipeline.run(question).answer == expected


@pytest.mark.parametrize("question", UNANSWERABLE)
def test_abstains_when_documents_are_silent(pipeline, question):
    answer = pipeline.run(question)
    assert answer.answer is None
    assert answer.citations == []
    assert answer.passages, "the best passages are still returned"
    assert 0.0 <= answer.score < pipeline.threshold


def test_reader_reads_long_context_in_windows():
    reader = Reader(max_seq_length=128, doc_stride=48)
    filler = "The weather was mild and nothing else happened that day. " * 30
    context = filler + "The treaty was signed in Lisbon in 1832. " + filler
    [reading] = reader.run("Where was the treaty signed?", [context])
    best = reading.spans[0]
    assert context[best.start : best.end] == best.text
    assert "Lisbon" in best.text


def test_cli_ask_json(tmp_path):
    out = cli("ask", "--json", "--no-rebuild", "Who did Anthropic hire to lead its infrastructure effort?")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) == {"question", "answer", "score", "calibrated", "citations", "passages", "warnings"}
    assert result["calibrated"] is True and result["warnings"] == []
    assert result["answer"] == "Eric Boyd"
    c = result["citations"][0]
    assert set(c) == {"source", "start", "end", "quote", "quote_start", "page", "heading", "ocr"}
    assert c["page"] is None and c["heading"] is None and c["ocr"] is False  # a plain text file has none of them
    assert c["quote"][c["start"] - c["quote_start"] : c["end"] - c["quote_start"]] == "Eric Boyd"
    text = (REPO / "seeds" / c["source"]).read_text(encoding="utf-8")
    assert text[c["start"] : c["end"]] == "Eric Boyd"
    assert set(result["passages"][0]) == {"source", "start", "end", "score", "text"}


def test_cli_interactive_with_piped_input():
    questions = "Who did Anthropic hire to lead its infrastructure effort?\n\nWhat is the capital of France?\nexit\nignored after exit\n"
    out = cli("ask", "--no-rebuild", stdin=questions)
    assert out.returncode == 0, out.stderr
    assert "Answer: Eric Boyd" in out.stdout and "[[Eric Boyd]]" in out.stdout
    assert "No answer found in the documents" in out.stdout
    assert "ignored after exit" not in out.stdout


def test_cli_rejects_bad_questions_without_traceback():
    for args in (["ask", "   "], ["ask", "x" * 1001], ["ask", "--top-k", "0", "hello"]):
        out = cli(*args, timeout=120)
        assert out.returncode == 2
        assert "Traceback" not in out.stderr and "error" in out.stderr


def test_cli_missing_index_is_a_clear_error(tmp_path):
    out = cli("search", "--no-rebuild", "--index", tmp_path / "none", "hello", timeout=120)
    assert out.returncode == 1
    assert "no index at" in out.stderr and "Traceback" not in out.stderr
