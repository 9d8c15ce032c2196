"""The local PostgreSQL + pgvector test server itself: vector search works, and stop()/start() round-trips."""
from __future__ import annotations

import psycopg
import pytest


def test_vector_inner_product_ordering(postgres):
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS pg_smoke")
        conn.execute("CREATE TABLE pg_smoke (id int PRIMARY KEY, embedding vector(3) NOT NULL)")
        conn.execute("INSERT INTO pg_smoke VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.6,0.8,0]'), (4, '[-1,0,0]')")
        # <#> is the *negative* inner product, so ascending order = most similar first
        rows = conn.execute("SELECT id, (embedding <#> %s::vector) * -1 FROM pg_smoke ORDER BY embedding <#> %s::vector",
                            ("[0,1,0]", "[0,1,0]")).fetchall()
        conn.execute("DROP TABLE pg_smoke")
    assert [r[0] for r in rows] == [2, 3, 1, 4]
    assert [round(r[1], 6) for r in rows] == [1.0, 0.8, 0.0, 0.0]


def test_stop_then_start_round_trip(postgres):
    conn = psycopg.connect(postgres.dsn, autocommit=True)
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        postgres.stop()
        try:
            assert not postgres.running
            with pytest.raises(psycopg.OperationalError):  # the open connection: database down mid-request
                conn.execute("SELECT 1")
            with pytest.raises(psycopg.OperationalError):  # a new connection
                psycopg.connect(postgres.dsn, connect_timeout=5)
        finally:
            postgres.start()
    finally:
        conn.close()
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone() is not None
