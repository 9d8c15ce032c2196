"""Split documents into passages of whole sentences, keeping exact character offsets."""
from __future__ import annotations

import re
from collections.abc import Iterable

from rag.types import Chunk, Document

# A sentence ends at . ! ? (and any closing quotes or brackets) followed by white space, or at a line break.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s)|\n")
_WORD = re.compile(r"\S+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every sentence in `text`, surrounding white space excluded."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        _append_trimmed(text, start, match.end(), spans)
        start = match.end()
    _append_trimmed(text, start, len(text), spans)
    return spans


def _append_trimmed(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if stripped:
        left = start + (len(piece) - len(piece.lstrip()))
        spans.append((left, left + len(stripped)))


def _split_long(text: str, span: tuple[int, int], max_chars: int) -> list[tuple[int, int]]:
    """Cut an over-long sentence into pieces of at most `max_chars`, between words where there are any;
    a word longer than `max_chars` (base64, a URL, a language written without spaces) is cut by characters."""
    pieces: list[tuple[int, int]] = []
    piece_start = piece_end = None
    for word in _WORD.finditer(text, span[0], span[1]):
        w_start, w_end = word.span()
        while w_end - w_start > max_chars:  # a word that cannot fit in any piece: close the open one, cut it
            if piece_start is not None:
                pieces.append((piece_start, piece_end))
                piece_start = None
            pieces.append((w_start, w_start + max_chars))
            w_start += max_chars
        if piece_start is not None and w_end - piece_start > max_chars:
            pieces.append((piece_start, piece_end))
            piece_start = None
        if piece_start is None:
            piece_start = w_start
        piece_end = w_end
    if piece_start is not None:
        pieces.append((piece_start, piece_end))
    return pieces


def chunk_document(doc: Document, max_chars: int, overlap_sentences: int) -> list[Chunk]:
    """Pack consecutive sentences into chunks of at most `max_chars` whatever the text,
    repeating the last `overlap_sentences` sentences of a chunk at the start of the next."""
    units: list[tuple[int, int]] = []
    for span in sentence_spans(doc.text):
        units.extend(_split_long(doc.text, span, max_chars) if span[1] - span[0] > max_chars else [span])
    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j = i + 1
        while j < len(units) and units[j][1] - units[i][0] <= max_chars:
            j += 1
        start, end = units[i][0], units[j - 1][1]
        chunks.append(Chunk(source=doc.source, start=start, end=end, text=doc.text[start:end]))
        if j >= len(units):
            break
        i = max(i + 1, j - overlap_sentences)
    return chunks


def chunk_documents(docs: Iterable[Document], max_chars: int, overlap_sentences: int) -> list[Chunk]:
    """Chunks of every document, in corpus order."""
    return [c for d in docs for c in chunk_document(d, max_chars, overlap_sentences)]
