"""The plain records that flow between stages: documents, chunks, passages, answers."""
from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Document:
    """One corpus file: `source` is its path relative to the corpus folder, `text` its text as indexed
    (what every offset indexes); `pages[n]` is where page n + 1 starts (PDF), `headings` the (offset,
    title) of each heading (HTML, Markdown, Word)."""

    source: str
    text: str
    format: str = "text"
    pages: tuple[int, ...] = ()
    headings: tuple[tuple[int, str], ...] = ()
    ocr_pages: tuple[int, ...] = ()  # 1-based pages whose text was read by OCR (an image file: all of them)

    def page_at(self, offset: int) -> int | None:
        """The 1-based page that holds `offset`, for documents with pages."""
        return bisect.bisect_right(self.pages, offset) if self.pages else None

    def heading_at(self, offset: int) -> str | None:
        """The nearest heading at or above `offset`, if any."""
        i = bisect.bisect_right([h[0] for h in self.headings], offset)
        return self.headings[i - 1][1] if i else None

    def read_by_ocr(self, offset: int) -> bool:
        """Whether the text at `offset` was read by OCR."""
        return bool(self.ocr_pages) and (self.page_at(offset) or 1) in self.ocr_pages

    def to_dict(self) -> dict:
        return {"text": self.text, "format": self.format, "pages": list(self.pages),
                "headings": [list(h) for h in self.headings], "ocr_pages": list(self.ocr_pages)}

    @classmethod
    def from_dict(cls, source: str, data: dict) -> Document:
        return cls(source, data["text"], data.get("format", "text"), tuple(data.get("pages", ())),
                   tuple((int(o), str(t)) for o, t in data.get("headings", ())),
                   tuple(int(p) for p in data.get("ocr_pages") or ()))


@dataclass(frozen=True)
class Chunk:
    """A span of a document; invariant: document.text[start:end] == text."""

    source: str
    start: int
    end: int
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Passage:
    """A chunk returned by the retriever with its relevance score (higher is better)."""

    chunk: Chunk
    score: float
    rank: int

    def to_dict(self) -> dict:
        return {
            "source": self.chunk.source,
            "start": self.chunk.start,
            "end": self.chunk.end,
            "score": self.score,
            "text": self.chunk.text,
        }


@dataclass(frozen=True)
class Citation:
    """Where an answer stands: character offsets of the answer in its document, and its sentence."""

    source: str
    start: int
    end: int
    quote: str
    quote_start: int  # offset of the quote in the document: the answer is quote[start - quote_start:][:end - start]
    page: int | None = None  # 1-based page of the answer (PDF)
    heading: str | None = None  # nearest heading above the answer (HTML, Markdown, Word)
    ocr: bool = False  # the answer's words were read by OCR (a scanned page or an image)


@dataclass(frozen=True)
class Answer:
    """The pipeline's result; `answer` is None when it abstains."""

    question: str
    answer: str | None
    score: float
    citations: list[Citation] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    calibrated: bool = True  # False: the reader has no calibration, so `score` is not a probability

    def to_dict(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            "score": self.score,
            "calibrated": self.calibrated,
            "citations": [asdict(c) for c in self.citations],
            "passages": [p.to_dict() for p in self.passages],
        }
