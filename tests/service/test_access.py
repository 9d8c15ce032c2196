"""Keys in one process, without a `rag serve` child: every collection route goes through the access check,
beyond loopback revoking the last key opens nothing, and the open /health names no collection once keys exist."""
from helpers.rag_server import FERRY, HARBOUR


def test_beyond_loopback_revoking_the_last_key_opens_nothing(settings, pipeline, tmp_path):
    from fastapi.testclient import TestClient

    from rag.service.server import create_app

    s = settings.with_overrides(data_dir=tmp_path / "data")
    with TestClient(create_app(s, pipeline=pipeline, keys_required=True)) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/collections").status_code == 401
        assert client.post("/ask", json={"question": "Who?"}).status_code == 401


def test_every_collection_route_goes_through_the_access_check():
    """Each route of the app that names a collection (or counts them) depends on rag.service.access.key_access, so
    a new route cannot forget the check; the rest are the page, its files and /health."""
    from rag.service.access import key_access
    from rag.service.routes import router

    def calls(dependant):
        for d in dependant.dependencies:
            yield d.call
            yield from calls(d)

    assert len(router.routes) > 10
    unchecked = sorted(r.path for r in router.routes if key_access not in calls(r.dependant))
    assert unchecked == ["/", "/documents/{source:path}", "/health"]


def test_the_open_health_names_no_collection_once_keys_exist(watched_client, tmp_path, embedder, pipeline):
    """GET /health needs no key: it names changed files, and on a --watch server the watched folders, only
    while no key exists."""
    from rag.service.keys import KeyStore

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "harbour.txt").write_bytes(HARBOUR)
    with watched_client(docs, watch_settle_seconds=3600.0,
                        corpus_check_seconds=0.0) as client:
        assert set(client.get("/health").json()["watch"]["folders"]) == {"default"}  # no keys: all is open
        (docs / "secret-plans.txt").write_bytes(FERRY)  # seen as a change, not synced for an hour
        assert client.get("/health").json()["corpus_changes"] == ["secret-plans.txt added"]
        KeyStore(tmp_path / "data").add("ops", "write")
        health = client.get("/health")
        watch = health.json()["watch"]
        assert health.json()["keys_required"] and watch["mode"] in ("inotify", "polling") and "pending" in watch
        assert not {"folders", "last_batch", "last_error"} & set(watch) and str(docs) not in health.text
        assert health.json()["status"] == "stale" and "secret-plans" not in health.text
