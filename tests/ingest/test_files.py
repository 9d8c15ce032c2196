"""Reading a folder (rag.ingest.files): names with a newline or not valid UTF-8, unreadable and oversized files and
links leaving the corpus skipped with a reason, formats rag does not read counted, a line of encoded data left out."""
import json
import os
import time
from pathlib import Path

from rag.ingest.files import load_corpus
from rag.store.files.index import index_corpus

from helpers import cli
from helpers.documents import FERRY, LIGHTHOUSE, base64_text


def test_a_name_with_a_newline_is_skipped_and_other_formats_are_counted(tmp_path, settings, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text(LIGHTHOUSE)
    (docs / "bad\nname.txt").write_text(FERRY)
    for name in ("table.csv", "letter.rtf", "old.doc", "README"):
        (docs / name).write_text("x")
    index = index_corpus(settings.with_overrides(docs_dir=docs, index_dir=tmp_path / "idx"), embedder, progress=False)
    assert list(index.documents) == ["good.txt"]
    assert "control characters" in index.manifest["skipped"]["bad\\u000aname.txt"]
    assert index.manifest["unsupported"] == {"(no extension)": 1, ".csv": 1, ".doc": 1, ".rtf": 1}
    out = cli("index", "--docs", docs, "--index", tmp_path / "idx2")
    assert "indexed 1 document (1 text)" in out.stdout and "into 1 passage in" in out.stdout, out.stdout
    assert "not read (4 files of formats rag does not read): 1 (no extension), 1 .csv, 1 .doc, 1 .rtf" in out.stdout


def test_a_five_megabyte_line_of_encoded_data_indexes_in_seconds(tmp_path, settings, embedder, caplog):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "blob.txt").write_text(base64_text(5 * 1024 * 1024))
    (docs / "note.txt").write_text("The Fastnet Rock lighthouse was completed in 1904.")
    started = time.perf_counter()
    index = index_corpus(settings.with_overrides(docs_dir=docs, index_dir=tmp_path / "idx"), embedder, progress=False)
    assert time.perf_counter() - started < 30
    assert [c.source for c in index.chunks] == ["note.txt"]
    assert "blob.txt: 5242880 characters of encoded data" in caplog.text


def test_bad_file_name_and_unreadable_file_are_skipped_with_a_warning(tiny_docs, monkeypatch, caplog):
    with open(os.fsencode(tiny_docs) + b"/caf\xe9.txt", "wb") as f:
        f.write(b"x.")
    locked = tiny_docs / "locked.txt"
    locked.write_text("secret.")
    real_read = Path.read_bytes

    def read_bytes(self):  # root reads any file whatever its mode, so the refusal is simulated
        if self.name == "locked.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    corpus = load_corpus(tiny_docs)
    assert [d.source for d in corpus.documents] == ["lighthouse.txt"]
    assert corpus.skipped["locked.txt"].startswith("cannot be read (Permission denied")
    assert any("not valid UTF-8" in reason for name, reason in corpus.skipped.items() if name.startswith("caf"))
    json.dumps(corpus.skipped)  # the manifest can hold the names
    assert "skipping locked.txt" in caplog.text and "skipping caf" in caplog.text


def test_links_leaving_the_corpus_are_skipped_unless_allowed(tiny_docs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("The password is swordfish.")
    (tiny_docs / "link.txt").symlink_to(outside / "secret.txt")
    (tiny_docs / "inner.txt").symlink_to(tiny_docs / "lighthouse.txt")
    corpus = load_corpus(tiny_docs)
    assert sorted(d.source for d in corpus.documents) == ["inner.txt", "lighthouse.txt"]
    assert "outside the corpus" in corpus.skipped["link.txt"]
    assert "link.txt" in [d.source for d in load_corpus(tiny_docs, follow_links=True).documents]


def test_oversized_file_is_skipped(tiny_docs):
    (tiny_docs / "big.txt").write_text("A sentence. " * 1000)
    corpus = load_corpus(tiny_docs, max_file_bytes=5000)
    assert "over the" in corpus.skipped["big.txt"] and [d.source for d in corpus.documents] == ["lighthouse.txt"]
