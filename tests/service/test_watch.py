"""Watched folders (rag.service.watch): real files written, overwritten, renamed and deleted while questions are asked
of a `--watch` server; a half-written file is not indexed until complete; a burst is a few batches; a
folder that never falls quiet still syncs its settled files; `rag index --watch` ends cleanly on a signal."""
import os
import signal
import threading
import time
from datetime import datetime

import pytest

from rag.config import Settings
from rag.service.watch import Watcher
from rag.store.files.index import read_manifest

HARBOUR = "The harbour master of Inis Mor is called Sean Ryan. He took the post in 2019 after years at sea.\n"
LIGHTHOUSE = "The Fastnet Rock lighthouse was completed in 1904. It stands off the south coast of Ireland.\n"
DEADLINE = 60  # seconds: generous, for a busy two-core machine; the polls return as soon as the state is reached


def wait_for(condition, what: str, deadline: float = DEADLINE):
    """Poll `condition` until it returns something true; fail naming `what` after the deadline."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "harbour.txt").write_text(HARBOUR)
    (folder / "lighthouse.txt").write_text(LIGHTHOUSE)
    return folder


def sources(client) -> set[str]:
    return {d["source"] for d in client.get("/collections/default/documents").json()}


def cited(client, question: str) -> tuple[str | None, set[str]]:
    body = client.post("/ask", json={"question": question}).json()
    return body["answer"], {c["source"] for c in body["citations"]}


@pytest.mark.slow
def test_written_overwritten_renamed_and_deleted_files_follow_while_questions_are_answered(watched_client, tmp_path, docs, embedder, pipeline):
    with watched_client(docs, watch_settle_seconds=0.5) as client:
        failures, asked, done = [], [], threading.Event()

        def ask_all_along():  # questions keep being answered from the last good index while it updates
            while not done.is_set():
                r = client.post("/ask", json={"question": "When was the Fastnet Rock lighthouse completed?"})
                asked.append(r.status_code)
                if r.status_code != 200 or r.json()["answer"] != "1904":
                    failures.append(r.text)

        asker = threading.Thread(target=ask_all_along)
        asker.start()
        try:
            question = "Who is the captain of the ferry?"
            (docs / "ferry.txt").write_text("The ferry to Inis Mor leaves every morning. Its captain is Nora Walsh.\n")
            wait_for(lambda: cited(client, question) == ("Nora Walsh", {"ferry.txt"}), "the new file to be answered from")

            (docs / "ferry.txt").write_text("The ferry to Inis Mor leaves every morning. Its captain is Liam Burke.\n")
            wait_for(lambda: cited(client, question) == ("Liam Burke", {"ferry.txt"}), "the overwritten file's new answer")

            (docs / "ferry.txt").rename(docs / "boats.txt")
            wait_for(lambda: sources(client) == {"harbour.txt", "lighthouse.txt", "boats.txt"}, "the rename")
            assert cited(client, question) == ("Liam Burke", {"boats.txt"})

            (docs / "boats.txt").unlink()
            wait_for(lambda: sources(client) == {"harbour.txt", "lighthouse.txt"}, "the removed file to be dropped")
            assert "boats.txt" not in cited(client, question)[1]
            assert client.get("/api/documents/boats.txt").status_code == 404
        finally:
            done.set()
            asker.join()
        assert asked and not failures, failures[:3]
        watch = client.get("/health").json()["watch"]
        assert watch["batches"] >= 4 and watch["last_error"] is None
        assert sorted(docs.iterdir()) == [docs / "harbour.txt", docs / "lighthouse.txt"]  # the user's files untouched


@pytest.mark.slow
def test_a_half_written_file_is_not_indexed_until_complete(watched_client, tmp_path, docs, embedder, pipeline):
    first = "The ferry to Inis Mor leaves from Rossaveal harbour every morning at nine.\n"
    second = "Its captain is Nora Walsh, who has sailed the route for twenty years.\n"
    with watched_client(docs, watch_settle_seconds=1.5) as client:
        seen: list[str] = []
        stop = threading.Event()

        def watch_the_document():  # every version of ferry.txt that the server ever answers from
            while not stop.is_set():
                r = client.get("/api/documents/ferry.txt")
                if r.status_code == 200 and (not seen or seen[-1] != r.json()["text"]):
                    seen.append(r.json()["text"])
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_the_document)
        watcher.start()
        try:
            with open(docs / "ferry.txt", "w") as f:  # written in two parts, a pause shorter than the settle interval
                f.write(first)
                f.flush()
                time.sleep(0.5)
                f.write(second)
            wait_for(lambda: seen, "the complete file to be indexed")
            time.sleep(0.5)
        finally:
            stop.set()
            watcher.join()
        assert seen == [first + second]
        assert cited(client, "Who is the captain of the ferry?") == ("Nora Walsh", {"ferry.txt"})


def test_a_burst_of_files_is_a_few_batches_and_health_reports_the_watch(watched_client, tmp_path, docs, embedder, pipeline):
    with watched_client(docs, watch_settle_seconds=0.5) as client:
        health = client.get("/health").json()["watch"]
        assert health["mode"] in ("inotify", "polling") and health["settle_seconds"] == 0.5
        assert set(health["folders"]) == {"default"}
        before = health["batches"]
        burst = docs / "lockers"
        burst.mkdir()
        for i in range(100):
            (burst / f"locker-{i:03d}.txt").write_text(f"Locker {i} at the Galway pier holds the spare oars of boat number {i}.\n")
        wait_for(lambda: len(sources(client)) == 102, "all 100 files to be indexed")
        health = wait_for(lambda: (h := client.get("/health").json()["watch"])["pending"] == 0 and h, "nothing pending")
        assert health["batches"] - before <= 3, health
        assert health["synced_files"] >= 100 and health["last_error"] is None
        assert health["last_batch"]["added"] >= 1
        assert datetime.strptime(health["last_synced"], "%Y-%m-%dT%H:%M:%SZ")
        assert client.get("/health").json()["status"] == "ok"  # the index matches the folder again


@pytest.mark.slow
def test_a_folder_that_never_falls_quiet_syncs_its_settled_files_and_holds_back_the_growing_one(tmp_path):
    """No models: a Watcher (by polling) on a folder where one file keeps growing; the sync it makes after
    watch_max_wait_seconds takes the settled file and says to hold back the growing one."""
    folder = tmp_path / "docs"
    folder.mkdir()
    calls: list[dict[str, bool]] = []

    def sync(name, hold):
        calls.append({p.name: hold(p.name) for p in sorted(folder.iterdir())})
        return True

    s = Settings(watch_settle_seconds=0.5, watch_max_wait_seconds=2.0, watch_polling=True, watch_poll_seconds=0.2)
    watcher = Watcher(lambda: {"docs": (folder, tmp_path / "index")}, sync, s).start()
    try:
        assert watcher.describe()["mode"] == "polling"
        wait_for(lambda: calls, "the first look at the folder")  # a folder newly watched is compared once
        calls.clear()
        (folder / "done.txt").write_text("Finished.\n")
        with open(folder / "log.txt", "w") as growing:
            end = time.monotonic() + 5
            while time.monotonic() < end and not calls:
                growing.write("another line\n")
                growing.flush()
                time.sleep(0.1)
        wait_for(lambda: calls, "a sync despite the growing file")
        assert calls[0]["done.txt"] is False and calls[0]["log.txt"] is True
        assert watcher.describe()["pending"] >= 1 or len(calls) > 1  # the growing file waits for a later batch
        wait_for(lambda: watcher.describe()["pending"] == 0, "the grown file to settle")
        assert calls[-1]["log.txt"] is False
        calls.clear()
        (folder / ".partial.txt").write_text("hidden, as a download or an upload in progress is\n")
        (folder / "notes.tmp").write_text("not a format rag reads\n")
        time.sleep(1.5)
        assert not calls and watcher.describe()["pending"] == 0
    finally:
        assert watcher.stop(timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_index_watch_prints_a_line_per_batch_and_stops_cleanly_on_a_signal(sig, tmp_path, docs, embedder, monkeypatch, capsys):
    import rag.pipeline.fast_start
    import rag.service.watch_targets
    import rag.store.embedding
    from rag.cli import main

    monkeypatch.setattr(rag.pipeline.fast_start, "prepare_fast_start", lambda settings: [])  # no ONNX export in a test
    monkeypatch.setattr(rag.store.embedding.Embedder, "from_settings", classmethod(lambda cls, settings: embedder))
    started = threading.Event()
    real = rag.service.watch_targets.watch_index

    def watch_index(*args, **kwargs):
        watcher = real(*args, **kwargs)
        started.set()
        return watcher

    monkeypatch.setattr(rag.service.watch_targets, "watch_index", watch_index)
    index = tmp_path / "index"

    def use_it():
        started.wait(DEADLINE)
        (docs / "ferry.txt").write_text("The ferry captain is Nora Walsh.\n")
        wait_for(lambda: "ferry.txt" in read_manifest(index)["files"], "the batch")
        time.sleep(0.3)
        os.kill(os.getpid(), sig)

    helper = threading.Thread(target=use_it)
    helper.start()
    try:
        code = main(["index", "--watch", "--settle", "0.5", "--docs", str(docs), "--index", str(index)])
    finally:
        helper.join()
    out, err = capsys.readouterr()
    assert code == 0
    assert "synced" in out and "1 added, 0 changed, 0 removed" in out
    assert err.strip().splitlines()[-1] == f"stopped watching {docs} (1 batch synced)"
    assert "Traceback" not in err


def test_watch_flags_need_watch_and_the_file_index(tmp_path, capsys):
    from rag.cli import main

    with pytest.raises(SystemExit):
        main(["index", "--settle", "2", "--docs", str(tmp_path), "--index", str(tmp_path / "i")])
    assert "--settle only acts with --watch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["index", "--watch", "--docs", str(tmp_path), "--index", str(tmp_path / "i"), "--store", "postgresql://u@h/db"])
    assert "does not work with --store" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--watch", "--settle", "0"])
    assert "--settle: must be a number of seconds above 0" in capsys.readouterr().err
