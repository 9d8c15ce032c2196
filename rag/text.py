"""Answer text normalisation, shared by the pipeline (merging equal answers) and evaluation (EM/F1):
the official SQuAD normalisation after Unicode folding of typographic punctuation."""
from __future__ import annotations

import re
import string
import unicodedata

# Typographic punctuation the articles use, folded to ASCII before the official normalisation.
_FOLD = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u2026": "...",
})
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Official SQuAD normalisation (lower case, no punctuation, articles or extra spaces) after
    Unicode folding: NFKC, typographic quotes and dashes to ASCII, so `Fei‑Fei Li` matches `Fei-Fei Li`."""
    text = unicodedata.normalize("NFKC", text).translate(_FOLD).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def plural(n: int, word: str) -> str:
    """"1 document", "2 documents" (n with thousands separators)."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def clean_question(text: str) -> str:
    """The question without control or other invisible format characters, white space collapsed: what is
    left is what gets answered (a question of only control characters is empty)."""
    return " ".join("".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text).split())


def checked_question(question: object, max_chars: int | None = None) -> str:
    """The question as it will be answered (clean_question), or a QuestionError saying why it cannot be
    asked: not text, empty once cleaned, or over `max_chars` as sent. The one question rule, behind
    Pipeline.check, the HTTP body, `rag ask` and the MCP tools."""
    from rag.errors import QuestionError

    if not isinstance(question, str):
        raise QuestionError(f"the question must be text, not {type(question).__name__}")
    cleaned = clean_question(question)
    if not cleaned:
        raise QuestionError("the question is empty")
    if max_chars is not None and len(question) > max_chars:
        raise QuestionError(f"the question is {len(question)} characters long; the limit is {max_chars}")
    return cleaned


#: How far (characters, each side) an answer may be widened to whole words: text without spaces (Chinese,
#: a URL) is never widened into a sentence.
MAX_WIDENING = 24
_POSSESSIVE = re.compile(r"['\u2019]s?(?!\w)")


def _punctuation(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def _unspaced(part: str) -> bool:
    """Whether `part` holds a character of a script written without spaces between words (Chinese, Japanese,
    Thai, Lao, Tibetan, Myanmar, Khmer), where a white-space-delimited "word" is a whole clause."""
    return any(ord(c) >= 0x2E80 or 0x0E00 <= ord(c) <= 0x109F or 0x1780 <= ord(c) <= 0x17FF for c in part)


def whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) widened so that it cuts no word: "Anthr" becomes "Anthropic", "39-year" (a piece of the
    compound "39-year-old") becomes "39-year-old", "1" of "1,000" becomes "1,000". Where the word goes on
    past punctuation the span does not hold, that punctuation is the word's own and the shorter span stands:
    "39" of "39-year-old", "Paris" of "(Paris),", "Tesla" of "Tesla's", "U.S" of "U.S.". The widened span
    never takes the word's outer punctuation, no side moves more than MAX_WIDENING characters, and scripts
    written without spaces are left alone."""
    if start >= end:
        return start, end
    lo = start
    while lo > 0 and not text[lo - 1].isspace() and start - lo <= MAX_WIDENING:
        lo -= 1
    before = text[lo:start]
    if before and (lo == 0 or text[lo - 1].isspace()) and not _unspaced(text[lo : start + 1]) \
            and _cut(before[-1], text[start], text[start:end], before):
        while _punctuation(text[lo]):
            lo += 1
        start = min(start, lo)
    hi = end
    while hi < len(text) and not text[hi].isspace() and hi - end <= MAX_WIDENING:
        hi += 1
    after = text[end:hi]
    if after and (hi == len(text) or text[hi].isspace()) and not _unspaced(text[end - 1 : hi]) \
            and not _POSSESSIVE.match(after) and _cut(after[0], text[end - 1], text[start:end], after):
        while _punctuation(text[hi - 1]):
            hi -= 1
        end = max(end, hi)
    return start, end


def _cut(outside: str, inside: str, span: str, rest: str) -> bool:
    """Whether the span's edge, between `inside` (its own character) and `outside` (the next one in the same
    white-space-delimited word, whose remainder is `rest`), cuts a word: letters or digits on both sides, a
    digit group separator between digits ("1,000", "3.5"), or punctuation the span itself holds (a piece of
    a compound: "39-year" of "39-year-old")."""
    if not any(c.isalnum() for c in rest):
        return False
    if outside.isalnum():
        return inside.isalnum()
    if outside in ",." and inside.isdigit() and any(c.isdigit() for c in rest):
        return True
    return _punctuation(outside) and outside in span
