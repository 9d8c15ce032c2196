"""The reader on its own: a model without a question-answering head refused in one line, long contexts read
in a bounded number of windows, a batch reading every pair, and no answer holding a control character."""
import pytest

from rag.config import PACKAGED_READER_DIR
from rag.pipeline.qa import Pipeline
from rag.reader.model import Reader
from rag.store.files.index import index_corpus

from helpers import cli

#: The escape right before the answer: the old reader answered "pwned\x07Greta Holm" from text like this.
ESC_BEFORE_ANSWER = "Ship log.\nThe captain of the Nordlys is \x1b[2J\x1b]0;pwned\x07Greta Holm. She sailed in 1987.\n"


def test_an_answer_never_holds_a_control_character(tmp_path, settings, embedder, pipeline):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "log.txt").write_text(ESC_BEFORE_ANSWER)
    s = settings.with_overrides(docs_dir=docs, index_dir=tmp_path / "idx")
    qa = Pipeline.from_settings(s, index=index_corpus(s, embedder, progress=False), embedder=embedder, reader=pipeline.reader)
    for question in ("Who is the captain of the Nordlys?", "What was set as the window title?"):
        answer = qa.run(question)
        assert answer.answer is None or not any(ord(c) < 32 for c in answer.answer), answer.answer
        spans = qa.reader.run(question, [p.chunk.text for p in answer.passages])
        assert all(not any(ord(c) < 32 and c not in "\t\n\r" for c in s.text) for r in spans for s in r.spans)


@pytest.mark.slow
def test_a_reader_without_a_qa_head_is_refused_in_one_line(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from rag.reader.folder import ReaderError
    from rag.reader.model import Reader

    folder = tmp_path / "encoder"
    AutoModel.from_pretrained(PACKAGED_READER_DIR).save_pretrained(folder)  # the encoder alone: no qa_outputs
    AutoTokenizer.from_pretrained(PACKAGED_READER_DIR).save_pretrained(folder)
    with pytest.raises(ReaderError, match="no trained question-answering head"):
        Reader(str(folder), backend="torch").warm_up()
    out = cli("ask", "--reader", folder, "--reader-backend", "torch", "Who did Anthropic hire?")
    assert out.returncode == 1 and "no trained question-answering head" in out.stderr and "Traceback" not in out.stderr


def test_reader_reads_long_context_in_windows():
    reader = Reader(max_seq_length=128, doc_stride=48)
    filler = "The weather was mild and nothing else happened that day. " * 30
    context = filler + "The treaty was signed in Lisbon in 1832. " + filler
    [reading] = reader.run("Where was the treaty signed?", [context])
    best = reading.spans[0]
    assert context[best.start : best.end] == best.text
    assert "Lisbon" in best.text


def test_reader_reads_a_bounded_number_of_windows(pipeline):
    reader = pipeline.reader
    huge = "word " * 50_000
    encoding = reader.encode(["What?", "What?"], [huge, "A short passage."])
    kept = reader.kept_windows(encoding)
    assert len(kept) <= reader.max_windows_per_context + 1
    pairs = [int(encoding["overflow_to_sample_mapping"][w]) for w in kept]
    assert pairs.count(1) == 1, "the short passage is always read"
    readings = reader.run("What?", [huge, "A short passage."])
    assert len(readings) == 2 and all(r.null_score < float("inf") for r in readings)


def test_a_batch_of_many_questions_reads_every_pair(pipeline):
    """The per-question window budget applies to one question's passages, not to a batch of pairs
    (training's dev evaluation reads 64 questions in one call)."""
    questions = [f"Who designed lighthouse number {i}?" for i in range(40)]
    contexts = [f"Lighthouse number {i} was designed by William Douglass." for i in range(40)]
    readings = pipeline.reader.read_pairs(questions, contexts)
    assert len(readings) == 40 and all(r.spans and r.null_score < float("inf") for r in readings)
