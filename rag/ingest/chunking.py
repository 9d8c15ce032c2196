"""Split documents into passages of whole sentences, keeping exact character offsets.

Sizes are measured in width, not characters: a wide (CJK, Hangul, fullwidth) character counts as 4, about
the tokens it costs the reader against ~4 characters per token of English, so a passage of any script fits
in one reader window and no text can make a passage that the reader takes seconds over."""
from __future__ import annotations

import bisect
import logging
import re

import numpy as np

from rag.records import Chunk, Document

# A sentence ends at . ! ? (and any closing quotes or brackets) followed by white space, at 。！？ (which
# need no space after them), or at a line break.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s)|[。！？][」』”’）]*|\n")
#: Code point ranges of wide characters (East Asian Wide and Fullwidth, roughly), each counted as WIDE.
_WIDE_RANGES = ((0x1100, 0x115F), (0x2E80, 0xA4CF), (0xAC00, 0xD7A3), (0xF900, 0xFAFF), (0xFE30, 0xFE4F),
                (0xFF00, 0xFF60), (0xFFE0, 0xFFE6), (0x20000, 0x3FFFD))
WIDE = 4
_WORD = re.compile(r"\S+")
#: Bumped whenever the rules below change what chunks a text gives, so older indexes are seen as stale.
CHUNKING_VERSION = 2
#: Encoded data (base64, base64url, hex: a data: URI's image, a key, a dump): 1,000 or more such characters
#: with no white space. It is not text anyone asks about, and embedding it costs as much as real text.
BLOB = re.compile(r"[A-Za-z0-9+/=_-]{1000,}")

log = logging.getLogger(__name__)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every sentence in `text`, surrounding white space excluded."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        _append_trimmed(text, start, match.end(), spans)
        start = match.end()
    _append_trimmed(text, start, len(text), spans)
    return spans


def sentences_around(spans: list[tuple[int, int]], start: int, end: int, extra: int = 0) -> tuple[int, int]:
    """(lo, hi) of the whole sentences around [start, end), `extra` more on either side, given the text's
    `sentence_spans`; never narrower than [start, end). The first sentence is the first that ends after
    `start`, the last the first that ends at or after `end` (the last sentence where none does)."""
    if not spans:
        return start, end
    ends = [e for _, e in spans]
    first = max(0, min(bisect.bisect_right(ends, start), len(spans) - 1) - extra)
    last = min(bisect.bisect_left(ends, end) + extra, len(spans) - 1)
    return min(spans[first][0], start), max(spans[last][1], end)


def _append_trimmed(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if stripped:
        left = start + (len(piece) - len(piece.lstrip()))
        spans.append((left, left + len(stripped)))


def widths(text: str) -> np.ndarray:
    """Cumulative width: widths(text)[i] is the width of text[:i] (ASCII text: simply i)."""
    if text.isascii():
        return np.arange(len(text) + 1, dtype=np.int64)
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    wide = np.zeros(len(points), dtype=bool)
    for lo, hi in _WIDE_RANGES:
        wide |= (points >= lo) & (points <= hi)
    return np.concatenate([[0], np.cumsum(np.where(wide, WIDE, 1))])


def _split_long(text: str, span: tuple[int, int], max_chars: int, width: np.ndarray) -> list[tuple[int, int]]:
    """Cut an over-long sentence into pieces at most `max_chars` wide, between words where there are any;
    a word wider than that (a URL, a language written without spaces) is cut between characters."""
    pieces: list[tuple[int, int]] = []
    piece_start = piece_end = None
    for word in _WORD.finditer(text, span[0], span[1]):
        w_start, w_end = word.span()
        while width[w_end] - width[w_start] > max_chars:  # fits in no piece: close the open one, cut the word
            if piece_start is not None:
                pieces.append((piece_start, piece_end))
                piece_start = None
            cut = max(w_start + 1, int(np.searchsorted(width, width[w_start] + max_chars, side="right")) - 1)
            pieces.append((w_start, cut))
            w_start = cut
        if piece_start is not None and width[w_end] - width[piece_start] > max_chars:
            pieces.append((piece_start, piece_end))
            piece_start = None
        if piece_start is None:
            piece_start = w_start
        piece_end = w_end
    if piece_start is not None:
        pieces.append((piece_start, piece_end))
    return pieces


def _outside(text: str, span: tuple[int, int], blobs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of `span` outside every blob, trimmed of white space (encoded data is never indexed)."""
    parts: list[tuple[int, int]] = []
    start = span[0]
    for b_start, b_end in blobs:
        if b_end <= start or b_start >= span[1]:
            continue
        _append_trimmed(text, start, b_start, parts)
        start = max(start, b_end)
    _append_trimmed(text, start, span[1], parts)
    return parts


def blob_chars(text: str) -> int:
    """How many characters of `text` are encoded data that chunking leaves out."""
    return sum(m.end() - m.start() for m in BLOB.finditer(text))


def chunk_document(doc: Document, max_chars: int, overlap_sentences: int) -> list[Chunk]:
    """Pack consecutive sentences into chunks at most `max_chars` wide whatever the text,
    repeating the last `overlap_sentences` sentences of a chunk at the start of the next."""
    blobs = [m.span() for m in BLOB.finditer(doc.text)]
    width = widths(doc.text)
    units: list[tuple[int, int]] = []
    for sentence in sentence_spans(doc.text):
        for span in _outside(doc.text, sentence, blobs) if blobs else [sentence]:
            wide = width[span[1]] - width[span[0]] > max_chars
            units.extend(_split_long(doc.text, span, max_chars, width) if wide else [span])
    # A chunk never spans a blob: units on either side of one go to different chunks.
    blob_starts = [b[0] for b in blobs]
    after_blob = {j for j in range(1, len(units))
                  if bisect.bisect_left(blob_starts, units[j - 1][1]) < bisect.bisect_left(blob_starts, units[j][0])}
    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j = i + 1
        while j < len(units) and j not in after_blob and width[units[j][1]] - width[units[i][0]] <= max_chars:
            j += 1
        start, end = units[i][0], units[j - 1][1]
        chunks.append(Chunk(source=doc.source, start=start, end=end, text=doc.text[start:end]))
        if j >= len(units):
            break
        i = j if j in after_blob else max(i + 1, j - overlap_sentences)
    return chunks


def passages_to_index(doc: Document, max_chars: int, overlap_sentences: int) -> list[Chunk]:
    """The chunks both stores index for a document, saying (as a warning) how much encoded data it leaves out."""
    if n := blob_chars(doc.text):
        log.warning("%s: %d characters of encoded data (base64/hex runs without spaces) are not indexed", doc.source, n)
    return chunk_document(doc, max_chars, overlap_sentences)
