"""The plain records that flow between stages: documents, chunks, passages, answers."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Document:
    """One corpus file: `source` is its path relative to the corpus folder."""

    source: str
    text: str


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


@dataclass(frozen=True)
class Answer:
    """The pipeline's result; `answer` is None when it abstains."""

    question: str
    answer: str | None
    score: float
    citations: list[Citation] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            "score": self.score,
            "citations": [asdict(c) for c in self.citations],
            "passages": [p.to_dict() for p in self.passages],
        }
