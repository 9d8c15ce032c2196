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
