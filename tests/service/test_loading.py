"""A server answers as soon as it starts: collections still opening (an index to build after a restart)
answer 503 with Retry-After, /health says `loading` and which, /collections marks them, and the others,
`default` included, answer meanwhile."""
import threading
import time

from fastapi.testclient import TestClient

import rag.service.catalog as catalog
from rag.service.server import create_app

HARBOUR = b"The harbour master of Inis Mor is called Sean Ryan. He took the post in 2019 after years at sea.\n"


def test_a_collection_that_must_be_built_at_start_is_a_503_with_retry_after_until_it_opens(settings, pipeline,
                                                                                            tmp_path, monkeypatch):
    s = settings.with_overrides(data_dir=tmp_path / "data")
    docs = tmp_path / "data" / "collections" / "late" / "docs"
    docs.mkdir(parents=True)
    (docs / "harbour.txt").write_bytes(HARBOUR)  # a file added while the server was down: no index yet
    release, building = threading.Event(), threading.Event()
    real = catalog.index_store

    def held_build(*args, **kwargs):  # the build takes as long as the test says
        building.set()
        assert release.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(catalog, "index_store", held_build)
    with TestClient(create_app(s, pipeline=pipeline)) as client:
        assert building.wait(60), "the start-up build did not begin"
        health = client.get("/health").json()
        assert health["status"] == "loading" and health["loading"] == ["late"]
        refused = client.post("/collections/late/ask", json={"question": "Who is the harbour master of Inis Mor?"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == str(s.loading_retry_seconds)
        assert "still loading" in refused.json()["detail"]
        assert client.get("/collections/late/documents").status_code == 503
        assert client.put("/collections/late").status_code == 503  # not "made", not "there already"
        assert {"name": "late", "documents": 0, "passages": 0, "loading": True} in client.get("/collections").json()
        other = client.post("/ask", json={"question": "Who is the harbour master of Inis Mor?"})
        assert other.status_code == 200  # `default` answers meanwhile
        release.set()
        deadline = time.time() + 120
        while client.get("/health").json()["status"] == "loading":
            assert time.time() < deadline, "the collection never opened"
            time.sleep(0.1)
        answer = client.post("/collections/late/ask", json={"question": "Who is the harbour master of Inis Mor?"})
        assert answer.status_code == 200 and answer.json()["answer"] == "Sean Ryan"
        assert {"name": "late", "documents": 1, "passages": 1, "loading": False} in client.get("/collections").json()


def test_an_up_to_date_collection_opens_before_one_that_must_be_built(settings, pipeline, tmp_path, monkeypatch):
    """One long build at a start keeps no other collection waiting: those whose index is committed open first."""
    s = settings.with_overrides(data_dir=tmp_path / "data")
    with TestClient(create_app(s, pipeline=pipeline)) as client:  # `ready` gets a committed index
        assert client.put("/collections/ready").status_code == 201
        assert client.post("/collections/ready/documents", files={"file": ("h.txt", HARBOUR)}).status_code == 201
    for name in ("aaa", "zzz"):  # sorted before and after `ready`; each with a file and no index
        (tmp_path / "data" / "collections" / name / "docs").mkdir(parents=True)
        (tmp_path / "data" / "collections" / name / "docs" / "h.txt").write_bytes(HARBOUR)
    release = threading.Event()
    real = catalog.index_store
    monkeypatch.setattr(catalog, "index_store", lambda *a, **k: (release.wait(120), real(*a, **k))[1])
    with TestClient(create_app(s, pipeline=pipeline)) as client:
        deadline = time.time() + 60
        while "ready" in client.get("/health").json()["loading"]:
            assert time.time() < deadline
            time.sleep(0.05)
        assert client.get("/health").json()["loading"] == ["aaa", "zzz"]
        assert client.post("/collections/ready/ask", json={"question": "Who is the harbour master of Inis Mor?"}
                           ).json()["answer"] == "Sean Ryan"
        release.set()


def test_health_names_no_loading_collection_once_keys_exist(settings, pipeline, tmp_path, monkeypatch):
    from rag.service.keys import KeyStore

    s = settings.with_overrides(data_dir=tmp_path / "data")
    (tmp_path / "data" / "collections" / "secret" / "docs").mkdir(parents=True)
    (tmp_path / "data" / "collections" / "secret" / "docs" / "h.txt").write_bytes(HARBOUR)
    KeyStore(s.data_dir).add("ops", "write")
    release = threading.Event()
    real = catalog.index_store
    monkeypatch.setattr(catalog, "index_store", lambda *a, **k: (release.wait(120), real(*a, **k))[1])
    with TestClient(create_app(s, pipeline=pipeline)) as client:
        health = client.get("/health").json()
        assert health["status"] == "loading" and health["loading"] == []
        release.set()
