"""Answers on word boundaries: a span that cuts a word is widened to it, unless the word's own punctuation
makes the shorter span the answer; checked on the function and on the real reader's n-best spans."""
import re

import pytest

from rag.text import whole_words


@pytest.mark.parametrize(("text", "span", "widened"), [
    ("He was a 39-year-old man.", "39-year", "39-year-old"),
    ("He was a 39-year-old man.", "39", "39"),  # the hyphen is the compound's own: "39" can be the answer
    ("joined Anthropic in", "Anthr", "Anthropic"),
    ("a 3.5 m pole", "3", "3.5"),
    ("\"39-year-old,\" he said", "year-old", "39-year-old"),
    ("about 1,000 people", "1", "1,000"),
    ("in the 1990s.", "1990", "1990s"),
    ("in Paris, France", "Paris", "Paris"),  # the comma is the word's own punctuation
    ("(Paris) is", "Paris", "Paris"),
    ("Tesla's car", "Tesla", "Tesla"),  # a possessive
    ("Tesla\u2019s car", "Tesla", "Tesla"),
    ("U.S. troops", "U.S", "U.S"),
    ("a 50% rise", "50", "50"),
    ("東京都は日本の首都です", "東京", "東京"),  # no spaces between words: never widened into a clause
    ("x" * 40 + "abc", "abc", "abc"),  # no more than MAX_WIDENING characters a side
])
def test_a_span_that_cuts_a_word_is_widened_to_it(text, span, widened):
    start = text.index(span)
    lo, hi = whole_words(text, start, start + len(span))
    assert text[lo:hi] == widened


def _cuts_a_word(text: str, start: int, end: int) -> bool:
    return (start > 0 and text[start - 1].isalnum() and text[start].isalnum()) or \
           (end < len(text) and text[end - 1].isalnum() and text[end].isalnum())


def test_the_reader_offers_no_span_that_cuts_a_word(pipeline):
    """Of the real reader's n-best spans on a real passage, none cuts a word once widened, while the raw
    token spans do (word pieces end inside words)."""

    from rag.reader.model import Reader

    context = ("The 39-year-old engineer, a former Microsoft executive named Eric Boyd, joined Anthropic in "
               "2024 to lead its infrastructure effort; the lab's Tokyo-based team reported to him.")
    spans = {}
    for widen in (True, False):
        reader = Reader(model=pipeline.reader.model_name, widen_to_words=widen, n_best=40)
        [reading] = reader.read_pairs(["How old was the engineer?"], [context])
        spans[widen] = reading.spans
    raw, widened = [s.text for s in spans[False]], [s.text for s in spans[True]]
    assert "39-year" in raw and any(_cuts_a_word(context, s.start, s.end) for s in spans[False])
    assert "39-year" not in widened and "39-year-old" in widened
    assert not any(_cuts_a_word(context, s.start, s.end) for s in spans[True])
    assert all(context[s.start:s.end] == s.text and not re.match(r"\s", s.text) for s in spans[True])
