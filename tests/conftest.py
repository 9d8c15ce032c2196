"""Shared fixtures: the real models and the committed index, loaded once per test session, offline."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import atexit  # noqa: E402
import contextlib  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# The ONNX export cache (rag.runtime) of this test session, not the user's: every session starts with none,
# so the torch paths run until a test (or a `rag index` the tests run) makes the exports.
if "RAG_CACHE" not in os.environ:
    os.environ["RAG_CACHE"] = tempfile.mkdtemp(prefix="rag-test-cache-")
    atexit.register(shutil.rmtree, os.environ["RAG_CACHE"], True)
# The servers' data folder (collections, API keys) of this test session, never the user's.
os.environ["RAG_DATA"] = tempfile.mkdtemp(prefix="rag-test-data-")
atexit.register(shutil.rmtree, os.environ["RAG_DATA"], True)

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from rag.config import Settings  # noqa: E402

from postgres_server import LocalPostgres, PostgresUnavailable  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "seeds"


@contextlib.contextmanager
def serving(app):
    """A real uvicorn server for `app` on a free port, in a thread of the test process (sharing its loaded
    models); its base URL, until the block ends."""
    import threading
    import time

    import uvicorn

    from rag.offline.bench import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def cli(*args, cwd=REPO, stdin=None, timeout=300) -> subprocess.CompletedProcess:
    """`rag ARGS` in a child process (as a user runs it), text output captured."""
    return subprocess.run([sys.executable, "-m", "rag.cli", *map(str, args)], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings(docs_dir=SEEDS, index_dir=REPO / "index")


@pytest.fixture(scope="session")
def embedder(settings):
    from rag.store.embedding import Embedder

    e = Embedder(settings.embedding_model)
    e.warm_up()
    return e


@pytest.fixture(scope="session")
def seed_index(settings, embedder):
    """The committed index; rebuild=False, so a stale or missing committed index fails here."""
    from rag.store.files.index import open_index

    return open_index(settings, embedder, rebuild=False)


@pytest.fixture(scope="session")
def pipeline(settings, seed_index):
    from rag.pipeline.qa import Pipeline

    return Pipeline.from_settings(settings, index=seed_index)


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL 18 + pgvector server (tests/postgres_server.py), started once per session; `.dsn`
    points at the `rag_test` database. Skips the test when no server can be started here."""
    try:
        pg = LocalPostgres().setup()
    except PostgresUnavailable as exc:
        pytest.skip(f"no local PostgreSQL: {exc}")
    try:
        yield pg
    finally:
        pg.shutdown()
