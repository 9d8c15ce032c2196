"""Span decoding: a reader's window logits -> the n-best answer spans of each context (inside the context,
end after start, not too long, widened to whole words, never holding a control character) and its
no-answer ([CLS]) score, as the SQuAD 2.0 recipe reads them."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rag.text import whole_words

#: Control characters other than white space: a span holding one is never offered as an answer.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Span:
    """A candidate answer: character offsets into context number `context` of the batch."""

    context: int
    start: int
    end: int
    text: str
    score: float  # start logit + end logit
    null_score: float  # the [CLS] score of the window the span came from


@dataclass(frozen=True)
class ContextReading:
    """What the reader found in one context: its n-best spans (best first) and its no-answer score."""

    spans: list[Span]
    null_score: float  # lowest [CLS] score over the context's windows, as in the SQuAD 2.0 recipe


def decode_readings(encoding, windows: list[int], start_logits: np.ndarray, end_logits: np.ndarray, contexts: list[str],
                n_best: int, max_answer_tokens: int, widen_to_words: bool) -> list[ContextReading]:
    """The n-best spans and the no-answer score of each context, from its windows' logits."""
    per_pair: list[dict[tuple[int, int], Span]] = [{} for _ in contexts]
    nulls = [float("inf")] * len(contexts)
    for row, w in enumerate(windows):
        pair = int(encoding["overflow_to_sample_mapping"][w])
        null = float(start_logits[row, 0] + end_logits[row, 0])
        nulls[pair] = min(nulls[pair], null)
        for span in _window_spans(encoding, w, pair, contexts[pair], start_logits[row], end_logits[row], null,
                                   n_best, max_answer_tokens, widen_to_words):
            key = (span.start, span.end)
            if key not in per_pair[pair] or per_pair[pair][key].score < span.score:
                per_pair[pair][key] = span
    readings = []
    for pair, spans in enumerate(per_pair):
        best = sorted(spans.values(), key=lambda s: -s.score)[: n_best]
        readings.append(ContextReading(spans=best, null_score=nulls[pair]))
    return readings

def _window_spans(encoding, w: int, pair: int, context: str, start: np.ndarray, end: np.ndarray, null: float,
              n_best: int, max_answer_tokens: int, widen_to_words: bool) -> list[Span]:
    """The n-best valid spans of window w: inside the context, end after start, not too long."""
    sequence_ids = encoding.sequence_ids(w)
    offsets = encoding["offset_mapping"][w]
    in_context = np.array([s == 1 for s in sequence_ids] + [False] * (len(start) - len(sequence_ids)))
    if not in_context.any():
        return []
    masked_start = np.where(in_context, start, -np.inf)
    masked_end = np.where(in_context, end, -np.inf)
    n = min(n_best, int(in_context.sum()))
    top_starts = np.argpartition(-masked_start, n - 1)[:n]
    top_ends = np.argpartition(-masked_end, n - 1)[:n]
    spans = []
    for s in top_starts:
        for e in top_ends:
            if e < s or e - s + 1 > max_answer_tokens:
                continue
            char_start, char_end = int(offsets[s][0]), int(offsets[e][1])
            while char_start < char_end and context[char_start].isspace():  # byte-level BPE (RoBERTa)
                char_start += 1  # offsets take in the space before a word
            while char_end > char_start and context[char_end - 1].isspace():
                char_end -= 1
            if widen_to_words and char_end > char_start:
                char_start, char_end = whole_words(context, char_start, char_end)
            if char_end <= char_start or _CONTROL.search(context, char_start, char_end):
                continue  # empty, or holding a control character (a terminal escape is never an answer)
            spans.append(
                Span(pair, char_start, char_end, context[char_start:char_end], float(start[s] + end[e]), null)
            )
    return spans
