"""PostgreSQL + pgvector as the index store, for corpora past one machine's memory and for several answering
servers on one database. Documents and chunks live in tables; dense search is pgvector's HNSW index (inner
product on the normalised MiniLM vectors); lexical search is BM25 computed in SQL over a tsvector of the
project's own BM25 tokens (GIN index), the same formula as bm25s, so both stores rank alike; the retriever
fuses the two rankings as for the file store. Indexing is incremental by file hash, one transaction per file
(a crash leaves no half-indexed file), one indexer at a time (an advisory lock).

The project only ships the client side (psycopg, psycopg_pool, pgvector): users point it at their own
database with `--store postgresql://…` or RAG_STORE."""
from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from rag.config import Settings
from rag.errors import RagError, UnavailableError
from rag.records import Chunk, Document
from rag.store.base import index_signature

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Key of the advisory lock an indexer holds, so two `rag index` runs on one database take turns.
INDEX_LOCK = 0x72616769
#: bm25s's defaults, with which rag.store.files.index builds the file store's BM25 (Lucene idf, Robertson tf).
BM25_K1, BM25_B = 1.5, 0.75
#: Passages embedded per batch while indexing (each file is still written in its own transaction).
EMBED_BATCH = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS rag_meta (key text PRIMARY KEY, value jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS rag_documents (
    source text PRIMARY KEY,
    hash text NOT NULL,
    text text NOT NULL,
    format text NOT NULL,
    pages jsonb NOT NULL DEFAULT '[]',
    headings jsonb NOT NULL DEFAULT '[]',
    ocr_pages jsonb NOT NULL DEFAULT '[]',
    indexed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS rag_chunks (
    id bigserial PRIMARY KEY,
    source text NOT NULL REFERENCES rag_documents (source) ON DELETE CASCADE,
    ord integer NOT NULL,
    start_offset integer NOT NULL,
    end_offset integer NOT NULL,
    text text NOT NULL,
    embedding vector({dimension}) NOT NULL,
    lexemes text NOT NULL,
    n_tokens integer NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (lexemes::tsvector) STORED,
    UNIQUE (source, ord)
);
CREATE INDEX IF NOT EXISTS rag_chunks_embedding_hnsw ON rag_chunks USING hnsw (embedding vector_ip_ops);
CREATE INDEX IF NOT EXISTS rag_chunks_tsv_gin ON rag_chunks USING gin (tsv);
"""

# BM25 over the chunks that share a term with the query (found through the GIN index): idf from each
# term's document frequency, tf from the tsvector's positions, length from n_tokens. MATERIALIZED: each
# term's count is computed once, not once per candidate row (which the planner does when it inlines them).
BM25_SQL = """
WITH q AS MATERIALIZED (SELECT * FROM unnest(%(terms)s::text[], %(literals)s::text[]) AS q (term, literal)),
d AS MATERIALIZED (SELECT u.term, (SELECT count(*) FROM rag_chunks WHERE tsv @@ u.literal::tsquery)::float8 AS df
                   FROM (SELECT DISTINCT term, literal FROM q) AS u),
s AS MATERIALIZED (SELECT count(*)::float8 AS n, coalesce(avg(n_tokens), 1)::float8 AS avgdl FROM rag_chunks),
c AS MATERIALIZED (SELECT id, tsv, n_tokens FROM rag_chunks WHERE tsv @@ %(query)s::tsquery
                   AND (%(sources)s::text[] IS NULL OR source = ANY(%(sources)s)))
SELECT c.id, sum(ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5))
                 * cardinality(l.positions) / (cardinality(l.positions)
                                              + %(k1)s * (1 - %(b)s + %(b)s * c.n_tokens / s.avgdl))) AS score
FROM c CROSS JOIN LATERAL unnest(c.tsv) AS l (lexeme, positions, weights)
JOIN q ON q.term = l.lexeme JOIN d ON d.term = l.lexeme CROSS JOIN s
GROUP BY c.id ORDER BY score DESC, c.id LIMIT %(n)s
"""


class StoreError(RagError):
    """The database cannot be used as an index store as it is (schema, extension, settings)."""


def require_driver() -> None:
    """The PostgreSQL client libraries are an extra: without them, say how to install them in one line."""
    import importlib

    missing = []
    for module in ("psycopg", "psycopg_pool", "pgvector"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise StoreError(f"the PostgreSQL store needs {', '.join(missing)}, which this install lacks: "
                         "pip install 'rag[postgres]' (or -e \".[postgres]\" in a checkout)")


class StoreUnavailableError(UnavailableError):
    """The database cannot be reached or did not answer in time."""


def describe_dsn(dsn: str) -> str:
    """host:port/dbname of a DSN, without the password, for messages and /health."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - psycopg raises ProgrammingError on a malformed DSN
        raise StoreError("the --store value is not a valid PostgreSQL DSN (postgresql://user@host:port/dbname)") from None
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', parts.get('user', ''))}"


def lexeme(token: str) -> str:
    """A BM25 token as a quoted tsvector/tsquery lexeme (taken as is: no parser, no stemming)."""
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def lexemes(tokens: list[str]) -> str:
    """A tsvector literal of the tokens with their positions, so a term's count is its number of positions."""
    return " ".join(f"{lexeme(t)}:{min(i, 16383)}" for i, t in enumerate(tokens, start=1))


class PostgresStore:
    """The store on a PostgreSQL database with the pgvector extension, through a connection pool."""

    kind = "postgresql"

    def __init__(self, settings: Settings) -> None:
        require_driver()
        self.settings = settings
        self.dsn = settings.store or ""
        self.schema = settings.store_schema
        if self.schema is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.schema):
            raise StoreError(f"store_schema must be a lower-case SQL name, not {self.schema!r}")
        self.where = describe_dsn(self.dsn) + (f" (schema {self.schema})" if self.schema else "")
        self.timeout = settings.store_timeout_seconds
        self._pinned = threading.local()  # the connection of this thread's snapshot(), if any
        self._check_server()
        from psycopg_pool import ConnectionPool

        self.pool = ConnectionPool(
            self.dsn, min_size=1, max_size=settings.store_pool_size, timeout=self.timeout, open=False,
            kwargs=self._connect_args(), configure=self._configure, name="rag-store")
        try:
            with self._errors():
                self.pool.open(wait=True, timeout=self.timeout)
        except BaseException:
            self.pool.close()  # no pool workers left retrying in the background
            raise
        self.documents = PostgresDocuments(self)
        self.docs_dir: Path | None = None  # the corpus folder it is kept in step with, once opened


    # -- connections -------------------------------------------------------------------------------------

    def _connect_args(self) -> dict:
        options = f"-c statement_timeout={round(self.timeout * 1000)}"
        if self.schema:  # a collection's own tables, with pgvector's types still found in public
            options += f" -c search_path={self.schema},public"
        return {"connect_timeout": max(1, round(self.timeout)), "options": options, "application_name": "rag"}

    def _check_server(self) -> None:
        """Connect once without the pool, to tell an unreachable server from one without pgvector."""
        import psycopg

        try:
            with psycopg.connect(self.dsn, **self._connect_args()) as conn:
                row = conn.execute("SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector'),"
                                   " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')").fetchone()
                if row[0] is None:
                    if not row[1]:
                        raise StoreError(f"the PostgreSQL server at {self.where} has no pgvector extension: install "
                                         "pgvector there (https://github.com/pgvector/pgvector)")
                    try:
                        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                    except psycopg.errors.InsufficientPrivilege:
                        raise StoreError(f"the database at {self.where} does not have the pgvector extension enabled and "
                                         "this user may not enable it: run `CREATE EXTENSION vector;` as its owner") from None
        except psycopg.OperationalError as err:
            raise StoreUnavailableError(f"cannot connect to PostgreSQL at {self.where}: {_first_line(err)}") from None

    @staticmethod
    def _configure(conn) -> None:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        conn.commit()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Database failures as the package's one-line errors (unreachable or slow: StoreUnavailableError)."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            yield
        except PoolTimeout:
            raise StoreUnavailableError(f"PostgreSQL at {self.where} is unreachable (no connection within "
                                        f"{self.timeout:g} s)") from None
        except psycopg.errors.QueryCanceled:
            raise StoreUnavailableError(f"PostgreSQL at {self.where} did not answer within {self.timeout:g} s") from None
        except psycopg.OperationalError as err:
            raise StoreUnavailableError(f"lost the connection to PostgreSQL at {self.where}: {_first_line(err)}") from None
        except psycopg.errors.UndefinedTable:
            raise StoreError(f"the database at {self.where} has no rag tables; build the store with `rag index --store …`") from None
        except psycopg.Error as err:  # privileges, a read-only replica, an old pgvector without HNSW, …
            raise StoreError(f"PostgreSQL at {self.where}: {_first_line(err)}") from None

    @contextlib.contextmanager
    def connection(self):
        """A pooled connection; its transaction commits at the end of the block (rolls back on error).
        Inside snapshot(), the snapshot's connection and transaction."""
        pinned = getattr(self._pinned, "conn", None)
        if pinned is not None:
            with self._errors():
                yield pinned
            return
        with self._errors(), self.pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Everything read inside the block (rankings, chunks, documents) comes from one REPEATABLE READ,
        READ ONLY transaction: an indexer committing meanwhile cannot make a question's passages and the
        document text its citation offsets index disagree."""
        if getattr(self._pinned, "conn", None) is not None:
            yield
            return
        with self._errors(), self.pool.connection() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._pinned.conn = conn
            try:
                yield
            finally:
                self._pinned.conn = None

    def close(self) -> None:
        self.pool.close()

    # -- schema ------------------------------------------------------------------------------------------

    def ensure_schema(self, dimension: int) -> None:
        """Create the tables and indexes if missing; refuse a schema of another version or dimension."""
        with self.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (INDEX_LOCK + 1,))  # one creator at a time
            if self.schema:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")  # a checked name: [a-z0-9_]
            exists = conn.execute("SELECT to_regclass(quote_ident(current_schema()) || '.rag_meta') IS NOT NULL").fetchone()[0]
            if exists:
                row = conn.execute("SELECT value FROM rag_meta WHERE key = 'schema_version'").fetchone()
                found = row[0] if row else None
                if found != SCHEMA_VERSION:
                    raise StoreError(f"the rag tables at {self.where} are schema version {found}, this rag uses "
                                     f"{SCHEMA_VERSION}: drop them (rag_meta, rag_documents, rag_chunks) and run `rag index --store …`")
                stored = conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = 'rag_chunks'::regclass"
                                      " AND attname = 'embedding'").fetchone()
                if stored and stored[0] != dimension:
                    raise StoreError(f"the store at {self.where} holds {stored[0]}-dimensional vectors, the embedder "
                                     f"makes {dimension}: use the same embedding model or a new database")
                # Added since schema version 1 was first written: which pages OCR read (empty for older rows).
                conn.execute("ALTER TABLE rag_documents ADD COLUMN IF NOT EXISTS ocr_pages jsonb NOT NULL DEFAULT '[]'")
                return
            conn.execute(SCHEMA.format(dimension=int(dimension)))
            conn.execute("INSERT INTO rag_meta VALUES ('schema_version', %s)", (json.dumps(SCHEMA_VERSION),))

    def expected_params(self, dimension: int) -> dict:
        return {**index_signature(self.settings), "embedding_dimension": dimension}

    def params(self) -> dict | None:
        """The settings the stored chunks were made with (None before the first index)."""
        with self.connection() as conn:
            row = conn.execute("SELECT value FROM rag_meta WHERE key = 'params'").fetchone()
        return row[0] if row else None

    # -- what the retriever and the pipeline ask -----------------------------------------------------------

    def dense_ranking(self, vector: np.ndarray, n: int, sources: list[str] | None = None) -> list[tuple[int, float]]:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        with self.connection() as conn:
            conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(max(n, self.settings.hnsw_ef_search)),))
            if sources is not None:  # the filter is in the scan: it goes on until n matching rows are found
                conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
            rows = conn.execute("SELECT id, -(embedding <#> %s) FROM rag_chunks"
                                " WHERE %s::text[] IS NULL OR source = ANY(%s) ORDER BY embedding <#> %s LIMIT %s",
                                (vector, sources, sources, vector, n)).fetchall()
        return [(int(i), float(s)) for i, s in rows]

    def lexical_ranking(self, tokens: list[str], n: int, sources: list[str] | None = None) -> list[tuple[int, float]]:
        if not tokens:
            return []
        query = " | ".join(lexeme(t) for t in dict.fromkeys(tokens))
        with self.connection() as conn:
            rows = conn.execute(BM25_SQL, {"terms": tokens, "literals": [lexeme(t) for t in tokens], "query": query,
                                           "k1": BM25_K1, "b": BM25_B, "n": n, "sources": sources}).fetchall()
        return [(int(i), float(s)) for i, s in rows if s > 0]

    def sources_matching(self, patterns: list[str]) -> list[str]:
        from rag.store.base import match_sources

        with self.connection() as conn:
            names = [r[0] for r in conn.execute("SELECT source FROM rag_documents ORDER BY source").fetchall()]
        return match_sources(names, patterns)

    def chunks(self, ids: list[int]) -> list[Chunk | None]:
        """The chunks with these ids, in order; None for one removed meanwhile by another indexer."""
        if not ids:
            return []
        with self.connection() as conn:
            rows = conn.execute("SELECT id, source, start_offset, end_offset, text FROM rag_chunks WHERE id = ANY(%s)",
                                (list(ids),)).fetchall()
        found = {r[0]: Chunk(r[1], r[2], r[3], r[4]) for r in rows}
        return [found.get(i) for i in ids]

    def counts(self) -> tuple[int, int]:
        with self.connection() as conn:
            return tuple(conn.execute("SELECT (SELECT count(*) FROM rag_documents), (SELECT count(*) FROM rag_chunks)").fetchone())

    def document_stats(self) -> dict[str, tuple[str, int]]:
        with self.connection() as conn:
            rows = conn.execute("SELECT d.source, d.format, count(c.id) FROM rag_documents d LEFT JOIN rag_chunks c"
                                " USING (source) GROUP BY d.source, d.format").fetchall()
        return {source: (fmt, int(n)) for source, fmt, n in rows}

    def file_hashes(self) -> dict[str, str]:
        """Every file the last index run read (those skipped as unconvertible too, as the file store does)."""
        with self.connection() as conn:
            row = conn.execute("SELECT value FROM rag_meta WHERE key = 'files'").fetchone()
            return row[0] if row else dict(conn.execute("SELECT source, hash FROM rag_documents").fetchall())

    def corpus_folder(self) -> str | None:
        """The folder the store was last indexed from (absolute path on the indexing machine)."""
        with self.connection() as conn:
            row = conn.execute("SELECT value FROM rag_meta WHERE key = 'docs_dir'").fetchone()
        return row[0] if row else None

    def describe(self) -> dict:
        return {"kind": self.kind, "database": self.where, "reachable": True}

    def drop(self) -> None:
        """Remove this store's schema and everything in it (a deleted collection's tables)."""
        if not self.schema:
            raise StoreError("only a collection's own schema can be dropped")
        with self.connection() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    def refresh(self) -> bool:
        return False  # every read goes to the database: another process's updates are seen as they commit

    def corpus_watch(self, settings: Settings) -> None:
        return None  # a shared database changes by itself; `rag index --store` keeps it in step


class PostgresDocuments(Mapping):
    """source -> Document, read from the database when asked (it may change under a running server)."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    def __getitem__(self, source: str) -> Document:
        with self.store.connection() as conn:
            row = conn.execute("SELECT text, format, pages, headings, ocr_pages FROM rag_documents WHERE source = %s",
                               (source,)).fetchone()
        if row is None:
            raise KeyError(source)
        return Document.from_dict(source, {"text": row[0], "format": row[1], "pages": row[2], "headings": row[3],
                                           "ocr_pages": row[4]})

    def __iter__(self) -> Iterator[str]:
        with self.store.connection() as conn:
            return iter([r[0] for r in conn.execute("SELECT source FROM rag_documents ORDER BY source").fetchall()])

    def __len__(self) -> int:
        return self.store.counts()[0]


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
