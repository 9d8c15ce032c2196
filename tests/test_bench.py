"""The benchmarks' own pieces that can be checked cheaply: the corpus the scale and store benchmarks
build, and the scale plot."""
import json

import pytest

from rag.offline.bench import _plot_scale, passage_corpus


def squad_file(tmp_path, n_contexts):
    paragraphs = [{"context": f"Paragraph {i} says that the river number {i} is {i * 3} kilometres long. "
                              f"It is not the same river as number {i + 1}.",
                   "qas": [{"id": f"q{i}", "question": f"How long is river {i}?", "is_impossible": False,
                            "answers": [{"text": f"{i * 3} kilometres", "answer_start": 0}]},
                           {"id": f"q{i}b", "question": f"Who named river {i}?", "is_impossible": True, "answers": []}]}
                  for i in range(n_contexts)]
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"data": [{"title": "Rivers", "paragraphs": paragraphs}]}), encoding="utf-8")
    return path


def test_passage_corpus_writes_one_file_per_context_until_the_size(tmp_path):
    count, questions, distinct = passage_corpus(squad_file(tmp_path, 30), 12, tmp_path / "docs", 5)
    files = sorted((tmp_path / "docs").iterdir())
    assert count == distinct == 12 and len(files) == 12  # these short contexts are one passage each
    assert files[0].read_text(encoding="utf-8").startswith("Paragraph 0 says")
    assert questions == [f"How long is river {i}?" for i in range(5)]  # answerable ones only


def test_passage_corpus_refuses_a_file_too_small(tmp_path):
    with pytest.raises(ValueError, match="only 3 passages"):
        passage_corpus(squad_file(tmp_path, 3), 10, tmp_path / "docs", 5)


def test_passage_corpus_repeats_the_contexts_only_when_asked(tmp_path):
    count, questions, distinct = passage_corpus(squad_file(tmp_path, 3), 8, tmp_path / "docs", 5, repeat=True)
    files = sorted(p.name for p in (tmp_path / "docs").iterdir())
    assert (count, distinct) == (8, 3)
    assert files == ["000000-copy1.txt", "000000-copy2.txt", "000000.txt", "000001-copy1.txt", "000001-copy2.txt",
                     "000001.txt", "000002-copy1.txt", "000002.txt"]
    assert (tmp_path / "docs" / "000001-copy2.txt").read_text(encoding="utf-8").startswith("Paragraph 1 says")
    assert questions == [f"How long is river {i}?" for i in range(3)]


def test_scale_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"passages": n, "build_seconds": n / 25, "p50_ms": 200 + n / 1000, "p95_ms": 250 + n / 900,
             "server_peak_mib": 700 + n / 100, "index_mib": n / 300} for n in (1000, 10_000)]
    line = _plot_scale(rows, tmp_path / "scale.png")
    assert line == f"plot: {tmp_path / 'scale.png'}"
    assert (tmp_path / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
