"""Labels of a training window: where its context starts and ends, and which tokens hold the answer
(shared by single-passage and grouped examples)."""
from __future__ import annotations


def context_range(sequence_ids: list[int | None]) -> tuple[int, int]:
    """The first and last token of a window's context (sequence 1)."""
    return sequence_ids.index(1), len(sequence_ids) - 1 - sequence_ids[::-1].index(1)


def answer_tokens(offsets, first: int, last: int, a_start: int, a_end: int) -> tuple[int, int]:
    """The start and end tokens of the answer [a_start, a_end) among context tokens first..last, or
    (0, 0), [CLS], when the window does not hold the whole answer."""
    if not (offsets[first][0] <= a_start and offsets[last][1] >= a_end):
        return 0, 0
    start = first
    while start <= last and offsets[start][0] <= a_start:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= a_end:
        end -= 1
    return start - 1, end + 1
