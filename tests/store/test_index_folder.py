"""The index folder (rag.store.files.index): a question uses the folder the index was built from and never removes
documents; `rag index` never replaces a folder that is not an index, nor one overlapping the corpus; a damaged
manifest is an error, not a traceback; two processes saving one index take turns and readers never miss it."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from rag.config import Settings
from rag.store.files.index import (
    CorpusFolderMismatchError,
    CorruptIndexError,
    UnsafeIndexFolderError,
    index_corpus,
    load_index,
    open_index,
    read_manifest,
    save_index,
)

from helpers import REPO, cli


@pytest.mark.slow
def test_a_question_from_a_folder_with_its_own_seeds_uses_the_folder_the_index_was_built_from(user_index):
    docs, index, elsewhere = user_index
    before = (index / "manifest.json").read_bytes()
    out = cli("ask", "--index", index, "--json", "Who is the lighthouse keeper on Inis Mor?", cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["answer"] == "Brigid Flanagan"
    assert (index / "manifest.json").read_bytes() == before, "the index was not touched"
    out = cli("ask", "--index", index, "--docs", elsewhere / "seeds", "Who is the lighthouse keeper?", cwd=elsewhere)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "was built from" in out.stderr and "rag index --docs" in out.stderr
    assert (index / "manifest.json").read_bytes() == before


def test_the_library_uses_the_recorded_folder_too(user_index, settings, embedder, monkeypatch):
    docs, index, elsewhere = user_index
    monkeypatch.chdir(elsewhere)  # a ./seeds here, and Settings() names no folder
    s = Settings(index_dir=index)
    assert s.docs_dir is None
    loaded = open_index(s, embedder)
    assert sorted(loaded.documents) == ["ferry.txt", "lighthouse.txt"] and loaded.docs_dir == docs.resolve()
    with pytest.raises(CorpusFolderMismatchError):
        open_index(s.with_overrides(docs_dir=elsewhere / "seeds"), embedder)
    box = docs.parent / "box"  # the index and its documents moved together: found beside it as recorded
    box.mkdir()
    docs.rename(box / docs.name)
    index.rename(box / index.name)
    assert open_index(Settings(index_dir=box / index.name), embedder).docs_dir == (box / docs.name).resolve()


def test_questions_never_remove_documents_from_an_index(user_index, settings, embedder, caplog):
    docs, index, _ = user_index
    (docs / "ferry.txt").unlink()
    (docs / "new.txt").write_text("The harbour master is called Sean Ryan.\n")
    loaded = open_index(Settings(index_dir=index), embedder)
    assert "ferry.txt" in loaded.documents and "new.txt" not in loaded.documents
    assert "ferry.txt" in caplog.text and "rag index" in caplog.text
    shutil.rmtree(docs)  # the folder is gone (unmounted, moved): the index is used as it is
    assert sorted(open_index(Settings(index_dir=index), embedder).documents) == ["ferry.txt", "lighthouse.txt"]
    with pytest.raises(Exception, match="not there any more; say which folder"):
        index_corpus(Settings(index_dir=index), embedder, progress=False)  # and rag index never falls back to ./seeds


def test_an_explicit_index_of_another_folder_switches_the_index(user_index, settings, embedder):
    _, index, elsewhere = user_index
    built = index_corpus(Settings(docs_dir=elsewhere / "seeds", index_dir=index), embedder, progress=False)
    assert "lighthouse.txt" not in built.documents and built.manifest["docs_dir"] == str((elsewhere / "seeds").resolve())


SAVER = textwrap.dedent("""
    import sys
    from rag.store.files.index import load_index, save_index
    index = load_index(sys.argv[1])
    for _ in range(int(sys.argv[3])):
        save_index(index, sys.argv[2])
    print("saved")
""")
READER = textwrap.dedent("""
    import sys, time
    from rag.store.files.index import load_index
    deadline, n = time.time() + float(sys.argv[2]), 0
    while time.time() < deadline:
        assert len(load_index(sys.argv[1]).chunks) > 0
        n += 1
    print("read", n)
""")


@pytest.mark.slow
def test_two_processes_saving_one_index_take_turns_and_readers_never_miss_it(tmp_path, user_index):
    _, source, _ = user_index
    target = tmp_path / "shared-idx"
    save_index(load_index(source), target)
    run = [sys.executable, "-c"]
    procs = [subprocess.Popen(run + [SAVER, str(source), str(target), "150"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    procs.append(subprocess.Popen(run + [READER, str(target), "6"], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    assert [o[0].split()[0] for o in outs] == ["saved", "saved", "read"]
    assert sorted(p.name for p in tmp_path.glob(".shared-idx*")) == [".shared-idx.lock"]


@pytest.mark.slow
def test_a_second_build_waits_for_the_first_and_says_so(tmp_path, user_index, settings, embedder, caplog):
    docs, index, _ = user_index
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from rag.store.files.index import index_lock
        with index_lock({str(index)!r}):
            print("holding", flush=True)
            time.sleep(3)
    """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    started = time.monotonic()
    index_corpus(Settings(docs_dir=docs, index_dir=index), embedder, progress=False)
    assert time.monotonic() - started > 1.0 and "waiting for it to finish" in caplog.text
    holder.wait(timeout=30)


def test_index_refuses_a_folder_that_is_not_an_index_and_keeps_its_files(tiny_docs, tmp_path, settings, embedder):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.docx").write_text("four years of work")
    s = settings.with_overrides(docs_dir=tiny_docs, index_dir=victim)
    with pytest.raises(UnsafeIndexFolderError, match="not a rag index folder.*thesis.docx"):
        index_corpus(s, embedder)
    with pytest.raises(UnsafeIndexFolderError):  # the ask/search/serve path: no manifest means "rebuild"
        open_index(s, embedder, rebuild=True)
    assert (victim / "thesis.docx").read_text() == "four years of work"
    assert sorted(p.name for p in victim.iterdir()) == ["thesis.docx"]


@pytest.mark.parametrize("where", ["same", "inside", "containing"])
def test_index_folder_overlapping_the_corpus_is_refused(tiny_docs, settings, embedder, where):
    index_dir = {"same": tiny_docs, "inside": tiny_docs / "idx", "containing": tiny_docs.parent}[where]
    with pytest.raises(UnsafeIndexFolderError, match="overlaps the corpus"):
        index_corpus(settings.with_overrides(docs_dir=tiny_docs, index_dir=index_dir), embedder)
    assert (tiny_docs / "lighthouse.txt").read_text().startswith("The Fastnet Rock")


def test_rebuild_replaces_only_its_own_index_and_keeps_the_folder_mode(tiny_docs, tmp_path, settings, embedder):
    index_dir = tmp_path / "idx"
    index_dir.mkdir()  # empty: allowed
    index_dir.chmod(0o750)
    leftover = tmp_path / ".idx.tmp-killed"  # what a killed build leaves behind
    leftover.mkdir()
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    s = settings.with_overrides(docs_dir=tiny_docs, index_dir=index_dir)
    index_corpus(s, embedder)
    index_corpus(s, embedder)  # an index of ours: replaced
    assert load_index(index_dir).manifest["n_documents"] == 1
    assert index_dir.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.lock", "docs", "idx"]  # the lock file stays (empty)


def test_manifest_with_wrong_types_is_reported_not_a_traceback(tiny_docs, tmp_path, settings, embedder):
    index_dir = tmp_path / "idx"
    index_corpus(settings.with_overrides(docs_dir=tiny_docs, index_dir=index_dir), embedder)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    (index_dir / "manifest.json").write_text(json.dumps({**manifest, "params": None}))
    with pytest.raises(CorruptIndexError, match="manifest.json: params"):
        read_manifest(index_dir)
