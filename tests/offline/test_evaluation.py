import json

import pytest

from rag.offline.evaluation import EvalError, evaluate_squad, format_table, load_qa, squad_items, write_markdown

from helpers import REPO, cli

TINY_SQUAD = {
    "version": "v2.0",
    "data": [
        {"title": "Lighthouse", "paragraphs": [
            {"context": "The Fastnet Rock lighthouse was completed in 1904. It was designed by William Douglass "
                        "and stands off the south coast of Ireland.",
             "qas": [
                 {"id": "a1", "question": "Who designed the Fastnet Rock lighthouse?", "is_impossible": False,
                  "answers": [{"text": "William Douglass", "answer_start": 62}]},
                 {"id": "a2", "question": "How many keepers lived in the Fastnet Rock lighthouse?", "is_impossible": True,
                  "answers": []},
             ]}]},
        {"title": "Volcano", "paragraphs": [
            {"context": "Mount Etna is an active volcano on the east coast of Sicily. Its last major eruption began in 2021.",
             "qas": [
                 {"id": "b1", "question": "On which island is Mount Etna?", "is_impossible": False,
                  "answers": [{"text": "Sicily", "answer_start": 53}]},
             ]}]},
    ],
}


@pytest.fixture()
def tiny_squad(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_SQUAD), encoding="utf-8")
    return path


def test_end_to_end_eval_on_tiny_squad_file(tiny_squad, settings, tmp_path):
    report = evaluate_squad(settings, tiny_squad)
    m = report.metrics
    assert (m["n"], m["n_answerable"], m["n_unanswerable"]) == (3, 2, 1)
    assert m["corpus_documents"] == 2
    assert m["recall_at_k"] == 100.0  # two documents, top-5 retrieval
    for key in ("exact_match", "f1", "has_answer_f1", "no_answer_accuracy", "reader_f1_gold"):
        assert 0.0 <= m[key] <= 100.0
    by_id = {r.item.id: r for r in report.rows}
    assert by_id["b1"].prediction == "Sicily" and by_id["b1"].cited == "Volcano/0"
    assert by_id["a1"].item.sources == ["Lighthouse/0"]
    out = tmp_path / "report.md"
    write_markdown(report, out)
    text = out.read_text(encoding="utf-8")
    assert "| F1 |" in text and "## Misses" in text
    assert "| Questions | 3 |" in format_table(report)


def test_limit_spreads_over_the_whole_file(tiny_squad):
    _, pairs = squad_items(tiny_squad, limit=2, split="all")
    assert [item.id for _, item in pairs] == ["a1", "b1"]


def test_hand_written_set_is_well_formed():
    items = load_qa(REPO / "eval" / "qa.jsonl")
    assert len(items) >= 50
    assert sum(not i.answers for i in items) >= 10
    sources = {p.name: p.read_text(encoding="utf-8") for p in (REPO / "seeds").glob("*.txt")}
    assert {s for i in items for s in i.sources} == set(sources)
    for i in items:
        for a in i.answers:
            assert any(a in sources[s] for s in i.sources), (i.id, a)


def test_malformed_qa_file_names_the_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"id": "1", "question": "q", "answers": [], "sources": []}\n{"id": 2}\n', encoding="utf-8")
    with pytest.raises(EvalError, match="line 2"):
        load_qa(path)


def test_bad_qa_records_are_one_line_errors(tmp_path, caplog):
    from rag.offline.evaluation import EvalError, load_qa, warn_unknown_sources

    for record, message in [({"id": "q1", "question": 5, "answers": [], "sources": []}, "question: Input should be a valid string"),
                            ({"id": "q1", "question": " \x00 ", "answers": [], "sources": []}, "question: the question is empty"),
                            ({"id": "q1", "question": "Who?", "answers": "Ann", "sources": []}, "answers"),
                            ({"id": "q1", "question": "Who?"}, "answers")]:
        path = tmp_path / "qa.jsonl"
        path.write_text(json.dumps({"id": "q0", "question": "Fine?", "answers": [], "sources": []}) + "\n" + json.dumps(record) + "\n")
        with pytest.raises(EvalError, match=f"line 2: not a valid QA record \\({message}"):
            load_qa(path)
    out = cli("eval", "--qa", path)
    assert out.returncode == 1 and "line 2" in out.stderr and "Traceback" not in out.stderr
    path.write_text(json.dumps({"id": 1, "question": "Who?", "answers": ["Ann"], "sources": ["gone.txt"]}) + "\n")
    items = load_qa(path)
    warn_unknown_sources(items, {"here.txt": None})
    assert items[0].id == "1" and "gone.txt" in caplog.text
