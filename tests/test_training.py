"""The training data: window labels and the extra-source draw (training itself never runs in tests)."""
import json
import random
from collections import Counter

import pytest
from transformers import AutoTokenizer

from rag.embedding import resolve_embedding_model
from rag.training import Example, extra_examples, windows


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_embedding_model("all-MiniLM-L6-v2"))


def decoded(tokenizer, window):
    return tokenizer.decode(window["input_ids"][window["start"] : window["end"] + 1])


def test_answer_labels_point_at_the_answer_tokens(tokenizer):
    context = "The Fastnet Rock lighthouse was designed by William Douglass and completed in 1904."
    start = context.index("William Douglass")
    [w] = windows(tokenizer, [Example("Who designed it?", context, start, "William Douglass")], 64, 16)
    assert decoded(tokenizer, w) == "william douglass"


def test_unanswerable_and_out_of_window_answers_point_at_cls(tokenizer):
    filler = "Nothing happened on that quiet day in the village. " * 12
    context = filler + "The bridge opened in 1932."
    start = context.index("1932")
    ws = windows(tokenizer, [Example("When did the bridge open?", context, start, "1932"),
                             Example("Who built it?", "A short text.", None)], 48, 16)
    answer_windows = [w for w in ws[:-1] if w["start"] > 0]
    assert answer_windows and all(decoded(tokenizer, w) == "1932" for w in answer_windows)
    assert any(w["start"] == w["end"] == 0 for w in ws[:-1]), "windows without the answer are labelled [CLS]"
    assert ws[-1]["start"] == ws[-1]["end"] == 0


def test_extra_questions_are_drawn_evenly_across_sources(tmp_path):
    """A small source is taken whole, the others fill the rest evenly, and unnamed sources are never drawn."""
    def article(source, n):
        return {"title": f"{source}:doc", "paragraphs": [{"context": "Alpha beta gamma.", "qas": [
            {"id": f"{source}{i}", "question": f"{source} question {i}?", "is_impossible": False,
             "answers": [{"text": "beta", "answer_start": 6}]} for i in range(n)]}]}

    path = tmp_path / "extra.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [article("big", 50), article("small", 3),
                                                               article("other", 50), article("unused", 50)]}))
    picked = extra_examples(path, ["big", "small", "other"], 21, random.Random(0))
    assert all(e.origin == "extra" and e.answer_start == 6 and e.answer_text == "beta" for e in picked)
    assert Counter(e.question.split()[0] for e in picked) == {"big": 9, "other": 9, "small": 3}
    assert len({e.question for e in picked}) == 21
