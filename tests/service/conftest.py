"""Fixtures of the service's tests."""
from __future__ import annotations

import pytest


@pytest.fixture()
def watched_client(tmp_path, embedder, pipeline):
    """Makes a TestClient of a `--watch` server over DOCS: `watched_client(docs, **settings overrides)`, its
    index and data folder under the test's tmp_path, the session's models shared."""
    from fastapi.testclient import TestClient

    from rag.config import Settings
    from rag.pipeline.qa import Pipeline
    from rag.service.server import create_app
    from rag.store.files.index import index_corpus

    def make(docs, **overrides) -> TestClient:
        s = Settings(docs_dir=docs, index_dir=tmp_path / "index", data_dir=tmp_path / "data", **overrides)
        index_corpus(s, embedder, progress=False)
        p = Pipeline.from_settings(s, rebuild=False, embedder=embedder, reader=pipeline.reader)
        return TestClient(create_app(s, pipeline=p, watch=True))

    return make
