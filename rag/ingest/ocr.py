"""OCR of page images with RapidOCR on ONNX Runtime (the `ocr` extra: `pip install 'rag[ocr]'`), whose
detection and recognition models ship inside its wheel, so it works offline. The engine loads once per
process; its text lines are put back together in reading order (lines by their vertical position, words
left to right, a blank line where the gap between lines says a paragraph ends)."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from rag.errors import RagError

log = logging.getLogger(__name__)

INSTALL_HINT = "install OCR with `pip install 'rag[ocr]'` to read it"
#: Pages are rendered at this resolution for OCR (dots per inch): small print stays legible, time stays bounded.
RENDER_DPI = 200
_ENGINE = None
_LOCK = threading.Lock()


class OcrUnavailableError(RagError):
    """The OCR extra is not installed."""


@dataclass(frozen=True)
class Line:
    """One recognised text line: its words and its box (left, top, right, bottom) in pixels."""

    text: str
    left: float
    top: float
    right: float
    bottom: float


def available() -> bool:
    """Whether the OCR extra (RapidOCR) is installed."""
    import importlib.util

    return importlib.util.find_spec("rapidocr") is not None


def engine():
    """The process's RapidOCR engine, loaded on first use (its chatty log silenced: nothing it prints may
    reach the user's terminal unescaped)."""
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            if not available():
                raise OcrUnavailableError(f"OCR is not installed; {INSTALL_HINT}")
            logging.getLogger("RapidOCR").setLevel(logging.ERROR)
            from rapidocr import RapidOCR

            logging.getLogger("RapidOCR").setLevel(logging.ERROR)
            _ENGINE = RapidOCR(params={"Global.log_level": "error"})
        return _ENGINE


def read_image(image) -> str:
    """The text of an image (a PIL image or an RGB array), lines in reading order, paragraphs apart."""
    array = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    ocr = engine()
    with _LOCK:  # one ONNX session per engine: pages take turns
        result = ocr(array)
    if result is None or result.txts is None:
        return ""
    lines = []
    for text, box in zip(result.txts, result.boxes):
        xs, ys = [p[0] for p in box], [p[1] for p in box]
        if text.strip():
            lines.append(Line(" ".join(text.split()), min(xs), min(ys), max(xs), max(ys)))
    return reading_order(lines)


def reading_order(lines: list[Line]) -> str:
    """Lines top to bottom (boxes that overlap vertically by more than half their height are one row, read
    left to right); where three rows or more share a gutter (two columns of text), the left column is read
    before the right one. A gap of more than 0.8 line heights between rows starts a new paragraph."""
    if not lines:
        return ""
    rows: list[list[Line]] = []
    for line in sorted(lines, key=lambda b: (b.top + b.bottom) / 2):
        if rows:
            last = rows[-1]
            top, bottom = min(b.top for b in last), max(b.bottom for b in last)
            overlap = min(bottom, line.bottom) - max(top, line.top)
            if overlap > 0.5 * min(bottom - top, line.bottom - line.top):
                last.append(line)
                continue
        rows.append([line])
    rows = [sorted(r, key=lambda b: b.left) for r in rows]
    width = max(b.right for b in lines) - min(b.left for b in lines) or 1.0
    blocks = _column_runs(rows, width)  # each block: rows, read in order
    heights = sorted(max(b.bottom for b in r) - min(b.top for b in r) for r in rows)
    typical = heights[len(heights) // 2] or 1.0
    out: list[str] = []
    for block in blocks:
        previous_bottom = None
        if out:
            out.append("\n\n")
        for row in block:
            top = min(b.top for b in row)
            if previous_bottom is not None:
                out.append("\n\n" if top - previous_bottom > 0.8 * typical else "\n")
            out.append(" ".join(b.text for b in row))
            previous_bottom = max(b.bottom for b in row)
    return "".join(out)


def _gutter(row: list[Line], width: float) -> float | None:
    """The middle of the widest gap between the boxes of a row, when it is wide enough to part columns."""
    gaps = [(b.left - a.right, (a.right + b.left) / 2) for a, b in zip(row, row[1:])]
    widest = max(gaps, default=(0.0, None))
    return widest[1] if widest[0] > 0.04 * width else None


def _column_runs(rows: list[list[Line]], width: float) -> list[list[list[Line]]]:
    """The rows cut into blocks read one after another: a run of three rows or more with a common gutter
    becomes two blocks (its left parts, then its right parts); every other row is a block of its own
    kind, merged with its neighbours."""
    blocks: list[list[list[Line]]] = []
    flat: list[list[Line]] = []
    i = 0
    while i < len(rows):
        split = _gutter(rows[i], width)
        run = [rows[i]]
        split_rows = 1 if split is not None else 0
        j = i + 1
        while split is not None and j < len(rows):
            row, other = rows[j], _gutter(rows[j], width)
            if other is not None and abs(other - split) < 0.06 * width:
                split_rows += 1
            elif not all(b.right < split or b.left > split for b in row):
                break
            run.append(row)
            j += 1
        if split is not None and split_rows >= 3:
            if flat:
                blocks.append(flat)
                flat = []
            left = [[b for b in r if b.right < split] for r in run]
            right = [[b for b in r if b.left > split] for r in run]
            blocks += [[r for r in left if r], [r for r in right if r]]
            i = j
        else:
            flat.append(rows[i])
            i += 1
    if flat:
        blocks.append(flat)
    return blocks
