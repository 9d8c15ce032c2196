"""Feedback on answers: "right" or "wrong", and where the right words stand when the user marks them. Kept
durably beside the index, one row a verdict: in SQLite (stdlib sqlite3, WAL) in the server's data folder for
the file store, in a `rag_feedback` table of the database for the PostgreSQL store (open_feedback
chooses); a corrected span is
checked against the indexed text and stored with the words it quotes, so a stored label is never a lie.
`rag feedback export` turns the labels into SQuAD 2.0 for `rag eval --squad`; `rag feedback stats` compares
the observed precision of answers with what the calibration predicted."""
from __future__ import annotations

import calendar
import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rag.errors import RagError, UnavailableError

FEEDBACK_FILE = "feedback.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    collection TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT,                      -- NULL: the service abstained
    score REAL,                       -- the score shown with it
    cited_source TEXT, cited_start INTEGER, cited_end INTEGER,
    reader TEXT NOT NULL,             -- the reader version that answered (rag.service.feedback.reader_version)
    verdict TEXT NOT NULL CHECK (verdict IN ('right', 'wrong')),
    correct_source TEXT, correct_start INTEGER, correct_end INTEGER,
    correct_quote TEXT,               -- the corrected span's words, quoted from the indexed text
    key TEXT                          -- the API key's name, when keys are in use
);
CREATE INDEX IF NOT EXISTS feedback_collection ON feedback (collection);
CREATE INDEX IF NOT EXISTS feedback_key ON feedback (key, created);
"""
COLUMNS = ("created", "collection", "question", "answer", "score", "cited_source", "cited_start", "cited_end",
           "reader", "verdict", "correct_source", "correct_start", "correct_end", "correct_quote", "key")
PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS rag_feedback (
    id BIGSERIAL PRIMARY KEY, created TEXT NOT NULL, collection TEXT NOT NULL, question TEXT NOT NULL,
    answer TEXT, score DOUBLE PRECISION, cited_source TEXT, cited_start INTEGER, cited_end INTEGER,
    reader TEXT NOT NULL, verdict TEXT NOT NULL CHECK (verdict IN ('right', 'wrong')),
    correct_source TEXT, correct_start INTEGER, correct_end INTEGER, correct_quote TEXT, key TEXT
);
CREATE INDEX IF NOT EXISTS rag_feedback_collection ON rag_feedback (collection);
CREATE INDEX IF NOT EXISTS rag_feedback_key ON rag_feedback (key, created);
"""


class FeedbackUnavailableError(UnavailableError):
    """The feedback database cannot be reached (a 503: the client may retry)."""


class FeedbackError(RagError):
    """A feedback record that cannot be stored as sent (a span outside its document, an unknown document)."""

    status = 422


class FeedbackLimitError(FeedbackError):
    """Too many posts from one key within a minute, or a collection holding its cap of verdicts: a 429."""

    status = 429

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds, for the Retry-After header (None: not before someone acts)


def reader_version(reader) -> str:
    """The reader's folder name and a hash of its metadata (weights' lineage and calibration): the same
    string for the same decisions."""
    digest = hashlib.sha256(json.dumps(reader.meta, sort_keys=True).encode()).hexdigest()[:12]
    return f"{Path(str(reader.model_name)).name}:{digest}"


@dataclass(frozen=True)
class DocumentSpan:
    """A place in a document: its source and character offsets (a cited answer, or the right words)."""

    source: str
    start: int
    end: int


def check_span(span: DocumentSpan, documents, field: str = "correct") -> str:
    """The words of `span` in the indexed document; a FeedbackError naming `field` (the request's `correct`
    or `cited`) when the document or offsets are wrong."""
    document = documents.get(span.source)
    if document is None:
        raise FeedbackError(f"{field}.source: {span.source!r} is not a document of this collection")
    if not 0 <= span.start < span.end <= len(document.text):
        raise FeedbackError(f"{field}: start and end must satisfy 0 <= start < end <= {len(document.text)}")
    if span.end - span.start > 1000:
        raise FeedbackError(f"{field}: a span of an answer is at most 1,000 characters")
    quote = document.text[span.start : span.end]
    if not quote.strip():
        raise FeedbackError(f"{field}: the span holds only white space")
    return quote


def check_cited(span: DocumentSpan, answer: str, documents) -> None:
    """A FeedbackError unless the indexed text at `span` is the answer (as every citation of it is)."""
    if check_span(span, documents, "cited") != answer:
        raise FeedbackError(f"cited: the words at {span.start}-{span.end} of {span.source!r} are not the answer; "
                            "send the answer's first citation as /ask gave it (ask again if the document changed)")


class FeedbackLimits:
    """At most `per_minute` verdicts kept from one key in any 60 s, and at most `cap` kept per collection:
    past either, a FeedbackLimitError (429) that says which. Counted from the stored verdicts themselves,
    so every worker of a server (and a restart) agrees; a refused post is not counted."""

    WINDOW = 60  # seconds

    def __init__(self, per_minute: int, cap: int) -> None:
        self.per_minute, self.cap = per_minute, cap

    def check(self, store, collection: str, key: str | None) -> None:
        """Refuse one more verdict of `key` for `collection` when it would pass a limit (`store`: FeedbackStore
        or PostgresFeedback)."""
        now = time.time()
        recent = store.created_since(key, _stamp(now - self.WINDOW))
        if len(recent) >= self.per_minute:
            oldest = calendar.timegm(time.strptime(recent[0], STAMP))
            wait = max(1, int(oldest + self.WINDOW - now) + 1)
            raise FeedbackLimitError(f"too much feedback: at most {self.per_minute} verdicts a minute per key; "
                                     f"retry in {wait} s", retry_after=wait)
        stored = store.count(collection)
        if stored >= self.cap:
            raise FeedbackLimitError(f"the collection {collection!r} holds {stored:,} verdicts, its cap of {self.cap:,}: "
                                     "no more are kept unless the server's operator raises it (rag serve --feedback-cap)")


#: How a verdict's `created` is written (UTC, to the second): text that sorts as time does.
STAMP = "%Y-%m-%dT%H:%M:%SZ"


def _stamp(seconds: float) -> str:
    return time.strftime(STAMP, time.gmtime(seconds))


def _row(collection: str, question: str, answer: str | None, score: float | None, cited: DocumentSpan | None, reader: str,
         verdict: str, correct: DocumentSpan | None, quote: str | None, key: str | None) -> tuple:
    """One verdict's values, in COLUMNS order."""
    return (_stamp(time.time()), collection, question, answer, score, *_span(cited),
            reader, verdict, *_span(correct), quote, key)


class FeedbackStore:
    """The feedback of one data folder (every collection's, by name), for the file store."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / FEEDBACK_FILE
        self._lock = threading.Lock()
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10)
        conn.row_factory = sqlite3.Row
        if not self._ready:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            self._ready = True
        return conn

    def add(self, collection: str, question: str, answer: str | None, score: float | None, cited: DocumentSpan | None,
            reader: str, verdict: str, correct: DocumentSpan | None, quote: str | None, key: str | None) -> int:
        """Store one verdict; its id."""
        with self._lock:
            conn = self._connect()
            try:
                with conn:
                    cursor = conn.execute(
                        f"INSERT INTO feedback ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                        _row(collection, question, answer, score, cited, reader, verdict, correct, quote, key))
                return int(cursor.lastrowid)
            finally:
                conn.close()

    def count(self, collection: str) -> int:
        """The verdicts kept for one collection."""
        return int(self._query("SELECT COUNT(*) FROM feedback WHERE collection = ?", (collection,))[0][0])

    def created_since(self, key: str | None, stamp: str) -> list[str]:
        """When each verdict of `key` (None: made without keys) since `stamp` was kept, oldest first."""
        return [r[0] for r in self._query("SELECT created FROM feedback WHERE key IS ? AND created >= ? ORDER BY id",
                                          (key, stamp))]

    def _query(self, sql: str, args: tuple) -> list:
        with self._lock:
            conn = self._connect()
            try:
                return conn.execute(sql, args).fetchall()
            finally:
                conn.close()

    def records(self, collection: str | None = None) -> list[dict]:
        if not self.path.exists():
            return []
        with self._lock:
            conn = self._connect()
            try:
                sql, args = "SELECT * FROM feedback", ()
                if collection is not None:
                    sql, args = sql + " WHERE collection = ?", (collection,)
                return [dict(row) for row in conn.execute(sql + " ORDER BY id", args)]
            finally:
                conn.close()

    def close(self) -> None:
        """Nothing held open: each call connects (SQLite connections are per thread)."""


class PostgresFeedback:
    """The feedback of a PostgreSQL store's database, in its `rag_feedback` table (every collection's), through
    a small connection pool; created on first use."""

    def __init__(self, dsn: str, timeout: float) -> None:
        from psycopg_pool import ConnectionPool

        self.pool = ConnectionPool(dsn, min_size=0, max_size=2, timeout=timeout, open=False, name="rag-feedback",
                                   kwargs={"connect_timeout": max(1, round(timeout)), "application_name": "rag"})
        self._ready = False

    @contextlib.contextmanager
    def _connection(self):
        import psycopg

        try:
            self.pool.open(wait=False)
            with self.pool.connection() as conn:
                if not self._ready:
                    conn.execute(PG_SCHEMA)
                    self._ready = True
                yield conn
        except psycopg.Error as err:
            raise FeedbackUnavailableError(f"feedback cannot reach PostgreSQL: {str(err).splitlines()[0]}") from None

    def add(self, *values) -> int:
        with self._connection() as conn:
            row = conn.execute(f"INSERT INTO rag_feedback ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
                               " RETURNING id", _row(*values)).fetchone()
        return int(row[0])

    def count(self, collection: str) -> int:
        with self._connection() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM rag_feedback WHERE collection = %s", (collection,)).fetchone()[0])

    def created_since(self, key: str | None, stamp: str) -> list[str]:
        with self._connection() as conn:
            return [r[0] for r in conn.execute("SELECT created FROM rag_feedback WHERE key IS NOT DISTINCT FROM %s"
                                               " AND created >= %s ORDER BY id", (key, stamp))]

    def records(self, collection: str | None = None) -> list[dict]:
        from psycopg.rows import dict_row

        sql, args = "SELECT * FROM rag_feedback", ()
        if collection is not None:
            sql, args = sql + " WHERE collection = %s", (collection,)
        with self._connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
            return list(cursor.execute(sql + " ORDER BY id", args))

    def close(self) -> None:
        self.pool.close()


def _span(span: DocumentSpan | None) -> tuple:
    return (span.source, span.start, span.end) if span else (None, None, None)


def export_squad(records: list[dict], documents_of) -> dict:
    """The labelled questions as SQuAD 2.0: a corrected span is the answer (in its document's text); "right"
    on an answer is that answer where it was cited; "right" on an abstention is an unanswerable question.
    `documents_of(collection)` gives a collection's documents. Verdicts that give no label are left out."""
    articles: dict[tuple[str, str], dict] = {}
    for r in records:
        if r["correct_source"] is not None:
            source, start, end, text = r["correct_source"], r["correct_start"], r["correct_end"], r["correct_quote"]
        elif r["verdict"] == "right" and r["answer"] is not None and r["cited_source"] is not None:
            source, start, end, text = r["cited_source"], r["cited_start"], r["cited_end"], r["answer"]
        elif r["verdict"] == "right" and r["answer"] is None:
            source, start, text = None, None, None
        else:
            continue  # "wrong" with no correction: no label
        documents = documents_of(r["collection"])
        if source is None:  # unanswerable: attached to any document of the collection (open-domain reads all)
            source = next(iter(sorted(documents)), None)
            if source is None:
                continue
        document = documents.get(source)
        if document is None or (start is not None and document.text[start:end] != text):
            continue  # the document changed since: the label no longer stands where it was given
        key = (r["collection"], source)
        article = articles.setdefault(key, {"title": f"{r['collection']}/{source}",
                                            "paragraphs": [{"context": document.text, "qas": []}]})
        qa = {"id": f"feedback-{r['id']}", "question": r["question"], "is_impossible": start is None,
              "answers": [] if start is None else [{"text": text, "answer_start": start}]}
        article["paragraphs"][0]["qas"].append(qa)
    return {"version": "v2.0", "data": list(articles.values())}


def stats(records: list[dict], bins: int = 5) -> str:
    """Counts by verdict, and the precision of answers by score bin: observed (right / judged) against the
    calibration's prediction (the mean score in the bin)."""
    lines = [f"{len(records)} verdicts: " + ", ".join(
        f"{sum(r['verdict'] == v for r in records)} {v}" for v in ("right", "wrong"))]
    answered = [r for r in records if r["answer"] is not None and r["score"] is not None]
    abstained = [r for r in records if r["answer"] is None]
    if abstained:
        lines.append(f"abstentions judged: {len(abstained)}, right (the documents do not say): "
                     f"{sum(r['verdict'] == 'right' for r in abstained)}")
    if answered:
        lines += ["", "| score bin | answers judged | observed precision | predicted (mean score) |", "|---|---:|---:|---:|"]
        for b in range(bins):
            lo, hi = b / bins, (b + 1) / bins
            inside = [r for r in answered if lo <= r["score"] < hi or (b == bins - 1 and r["score"] == 1.0)]
            if inside:
                right = sum(r["verdict"] == "right" for r in inside) / len(inside)
                mean = sum(r["score"] for r in inside) / len(inside)
                lines.append(f"| {lo:.1f}–{hi:.1f} | {len(inside)} | {100 * right:.1f}% | {100 * mean:.1f}% |")
    return "\n".join(lines)


def open_feedback(settings):
    """Where verdicts on answers are kept : a `rag_feedback` table in the PostgreSQL store's
    database, or SQLite in the data folder for the file store."""
    if settings.store:
        from rag.store.postgres.store import require_driver

        require_driver()
        return PostgresFeedback(settings.store, settings.store_timeout_seconds)
    return FeedbackStore(settings.data_dir)
