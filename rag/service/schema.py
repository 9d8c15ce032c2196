"""The API's contract: pydantic models shared by `rag ask --json` and the HTTP server, so they cannot drift."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator, model_validator

from rag.config import Settings
from rag.errors import QuestionError
from rag.records import Answer
from rag.text import checked_question


class AskRequest(BaseModel):
    """A question to answer from the indexed documents."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"question": "Who did Anthropic hire to lead its infrastructure effort?", "top_k": 5}]})

    # The limits are the server's Settings (max_question_chars, max_top_k; checked by Pipeline.check), not
    # constants fixed here at import: the defaults are in the descriptions.
    question: str = Field(..., description=f"The question, 1 to {Settings.max_question_chars} characters by default "
                                           "(Settings.max_question_chars; not only white space).")
    top_k: StrictInt | None = Field(None, ge=1, description=f"Passages to retrieve and read (1 to Settings.max_top_k, "
                                                            f"{Settings.max_top_k} by default; default {Settings.top_k}).")
    collection: str | None = Field(None, description="The collection to answer from (POST /ask; absent, null or "
                                                     "empty: `default`); on /collections/{name}/ask, absent, empty "
                                                     "or that name.", max_length=64)
    sources: list[str] | None = Field(None, max_length=100, description=(
        "Only passages of these documents are searched: file names or glob patterns (`reports/2024/*.pdf`)."))

    @field_validator("sources")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not p or len(p) > 1024 for p in value):
            raise ValueError("each source pattern is 1 to 1024 characters")
        return value

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        """Refuse a question with nothing left once cleaned (rag.text.checked_question; the length limit is the
        server's Settings, checked by Pipeline.check), so every caller gets the same."""
        try:
            checked_question(value)
        except QuestionError as err:
            raise ValueError(str(err)) from None
        return value


class CitationModel(BaseModel):
    source: str = Field(..., description="Document path relative to the corpus folder.")
    start: int = Field(..., description="Character offset of the answer in the document (text read as UTF-8).")
    end: int = Field(..., description="End offset: document_text[start:end] == answer.")
    quote: str = Field(..., description="The sentence that contains the answer.")
    quote_start: int = Field(..., description="Offset of the quote in the document: the answer starts at start - quote_start in the quote.")
    page: int | None = Field(None, description="1-based page of the answer, for documents with pages (PDF).")
    heading: str | None = Field(None, description="The nearest heading above the answer (HTML, Markdown, Word), if any.")
    ocr: bool = Field(False, description="The answer's words were read by OCR (a scanned page or an image): check them.")


class PassageModel(BaseModel):
    source: str
    start: int = Field(..., description="Character offset of the passage in its document.")
    end: int
    score: float = Field(..., description="Retrieval score (higher is better).")
    text: str


class AskResponse(BaseModel):
    """An answer with its citations, or `answer: null` when the documents do not contain one."""

    question: str
    answer: str | None = Field(..., description="The exact words from the document, or null when abstaining.")
    score: float = Field(..., ge=0.0, le=1.0, description="Calibrated probability that the best answer found is right; below the reader's threshold it abstains.")
    calibrated: bool = Field(True, description="False when the reader has no calibration: `score` is then not a probability (see `warnings`).")
    citations: list[CitationModel] = Field(..., description="Where the answer stands, best first; empty when abstaining.")
    passages: list[PassageModel] = Field(..., description="The passages read, in retrieval order.")
    warnings: list[str] = Field(default_factory=list, description="Anything that makes the answer less sure than its score says, e.g. a cited file changed since indexing.")

    @classmethod
    def from_answer(cls, answer: Answer) -> AskResponse:
        response = cls.model_validate(answer.to_dict())
        if not answer.calibrated:
            response.warnings.append(UNCALIBRATED)
        return response


#: The warning every answer of an uncalibrated reader carries.
UNCALIBRATED = ("the score is not calibrated: this reader's reader_meta.json holds no calibration, so the score is "
                "not a probability and the abstain threshold is a guess; fit one with `rag calibrate-reader`")


class HealthResponse(BaseModel):
    status: str = Field(..., description="ok; loading while collections are still being opened after a start "
                                         "(their routes answer 503 with Retry-After); stale when corpus files "
                                         "changed since the index was built.")
    loading: list[str] = Field(default_factory=list, description=(
        "The collections still loading; empty once keys exist (this route needs none: status still says loading)."))
    corpus_changes: list[str] = Field(default_factory=list, description=(
        "Files changed, removed or added since indexing; empty once keys exist (this route needs none)."))
    documents: int
    passages: int
    store: dict = Field(default_factory=dict, description="The index store: kind (files or postgresql), database, reachable.")
    embedding_model: str
    embedding_runtime: str = Field("", description="What runs the embedder: onnxruntime fp32 or sentence-transformers (torch fp32).")
    reader_model: str
    reader_runtime: str = Field("", description="What runs the reader: onnxruntime fp32, torch fp32, torch bf16 or onnxruntime int8.")
    reader_runtime_why: str = Field("", description="Why that runtime: measured fastest on this CPU, or the backend asked for.")
    retrieval_mode: str
    no_answer_threshold: float
    calibrated: bool = Field(True, description="False when the reader has no calibration: scores are not probabilities.")
    collections: int = Field(1, description="Collections served (the default one and those under the data folder).")
    keys_required: bool = Field(False, description="Whether routes other than /health need an API key.")
    watch: dict | None = Field(None, description="With --watch: mode (inotify or polling), pending changes, last_synced, "
                                                 "synced_files, batches, the folders watched and the last error (not these two once keys exist).")


#: The largest character offset a feedback span may give: what the feedback tables' INTEGER columns hold
#: (PostgreSQL's is 32 bits), far beyond any document's text; a larger one is a 422, never an overflow.
MAX_OFFSET = 2**31 - 1


class SpanModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(..., max_length=1024, description="The document, as cited.")
    start: StrictInt = Field(..., ge=0, le=MAX_OFFSET, description="Character offset of the first character.")
    end: StrictInt = Field(..., ge=1, le=MAX_OFFSET, description="Offset past the last character.")


class FeedbackRequest(BaseModel):
    """A user's verdict on an answer (or an abstention), and where the right words stand when they marked them."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., min_length=1, max_length=2000)
    answer: str | None = Field(..., max_length=2000, description="The answer shown; null for an abstention.")
    verdict: Literal["right", "wrong"] = Field(..., description="\"right\" on an abstention: the documents really do not say.")
    score: StrictFloat | None = Field(None, ge=0.0, le=1.0, description="The score shown with the answer (a number, "
                                                                        "not true/false or a string).")
    cited: SpanModel | None = Field(None, description=(
        "Where the answer shown was cited (its first citation): needed with \"right\" on an answer, which the export "
        "labels there; checked against the indexed text, whose words there must be the answer."))
    correct: SpanModel | None = Field(None, description="Where the right answer stands, selected in the document view.")
    collection: str | None = Field(None, max_length=64, description="POST /feedback: the collection asked (absent, null "
                                   "or empty: `default`); on /collections/{name}/feedback, absent, empty or that name.")

    @model_validator(mode="after")
    def _cited_with_answers(self) -> FeedbackRequest:
        """An answer judged right is labelled where it was cited, so it needs `cited`; an abstention cites nothing."""
        if self.verdict == "right" and self.answer is not None and self.cited is None:
            raise ValueError('cited: a "right" verdict on an answer needs where it was cited ({"source", "start", "end"} '
                             "of its first citation), else it gives no label to `rag feedback export`")
        if self.answer is None and self.cited is not None:
            raise ValueError("cited: an abstention (answer null) cites nothing")
        return self


class FeedbackResponse(BaseModel):
    id: int


class CollectionInfo(BaseModel):
    name: str
    documents: int
    passages: int
    loading: bool = Field(False, description="Still loading after the server started (documents and passages 0 "
                                             "until it is open): its routes answer 503 with Retry-After meanwhile.")


class DocumentInfo(BaseModel):
    source: str = Field(..., description="The document's path in its collection (what citations name).")
    format: str
    bytes: int | None = Field(None, description="Size of the file as uploaded (null when the file is not on this machine).")
    passages: int


class UploadResponse(BaseModel):
    source: str
    format: str
    passages: int = Field(..., description="Passages indexed from it: it is answerable as soon as this returns.")


class DocumentResponse(BaseModel):
    """A document's text exactly as indexed: citations' start/end are offsets into `text`."""

    source: str
    text: str
    format: str = Field("text", description="The format it was converted from: text, markdown, pdf, html, docx, image.")
    pages: list[int] = Field(default_factory=list, description="Offsets in `text` where each page starts (PDF, image).")
    ocr_pages: list[int] = Field(default_factory=list, description="1-based pages whose text was read by OCR.")
