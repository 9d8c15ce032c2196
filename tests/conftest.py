"""Shared fixtures: the real models and the committed index, loaded once per test session, offline."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import atexit  # noqa: E402
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


import pytest  # noqa: E402

from rag.config import Settings  # noqa: E402

from helpers import REPO, SEEDS  # noqa: E402
from helpers.documents import FERRY, LIGHTHOUSE  # noqa: E402
from helpers.postgres_server import LocalPostgres, PostgresUnavailable  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """The `postgres` and `browser` markers follow the fixtures a test uses (directly or through another
    fixture), so a new test that asks for the server or the browser is marked without anyone remembering to."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "postgres" in names:
            item.add_marker(pytest.mark.postgres)
        if "browser" in names:
            item.add_marker(pytest.mark.browser)


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
    """A private PostgreSQL 18 + pgvector server (tests/helpers/postgres_server.py), started once per session; `.dsn`
    points at the `rag_test` database. Skips the test when no server can be started here."""
    try:
        pg = LocalPostgres().setup()
    except PostgresUnavailable as exc:
        pytest.skip(f"no local PostgreSQL: {exc}")
    try:
        yield pg
    finally:
        pg.shutdown()


@pytest.fixture()
def user_index(tmp_path, settings, embedder):
    """A user's two documents indexed from `mydocs/` into `myindex/`, and a folder `elsewhere/` holding a
    `seeds/` of its own (where the old code rebuilt the user's index from)."""
    from rag.store.files.index import index_corpus

    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "lighthouse.txt").write_text(LIGHTHOUSE)
    (docs / "ferry.txt").write_text(FERRY)
    index_corpus(settings.with_overrides(docs_dir=docs, index_dir=tmp_path / "myindex"), embedder, progress=False)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(SEEDS, elsewhere / "seeds")
    return docs, tmp_path / "myindex", elsewhere


@pytest.fixture()
def tiny_docs(tmp_path):
    """A folder of one short document."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "lighthouse.txt").write_text("The Fastnet Rock lighthouse was completed in 1904. It stands off Ireland.\n")
    return docs
