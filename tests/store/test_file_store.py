import logging
import shutil

import pytest

from rag.ingest.files import load_corpus
from rag.pipeline.retrieval import Retriever
from rag.store.files.index import (
    CorruptIndexError,
    MissingIndexError,
    StaleIndexError,
    index_corpus,
    load_index,
    open_index,
    staleness,
)

from helpers import REPO, SEEDS


@pytest.fixture()
def corpus_copy(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(SEEDS, docs)
    return docs


def test_committed_index_is_current(seed_index, settings):
    assert not staleness(seed_index.manifest, settings)
    assert seed_index.manifest["n_documents"] == 5


def test_round_trip_gives_same_results(tmp_path, corpus_copy, settings, embedder):
    s = settings.with_overrides(docs_dir=corpus_copy, index_dir=tmp_path / "idx")
    built = index_corpus(s, embedder, progress=False)
    loaded = load_index(s.index_dir)
    assert loaded.chunks == built.chunks
    for q in ["Who mentored Karpathy during his PhD?", "Which company did Eric Boyd come from?"]:
        a = Retriever(built, embedder).run(q)
        b = Retriever(loaded, embedder).run(q)
        assert [(p.chunk, round(p.score, 6)) for p in a] == [(p.chunk, round(p.score, 6)) for p in b]
    assert [p.name for p in tmp_path.glob(".idx.*")] == [".idx.lock"], "temporary folders are cleaned up"


def test_rebuilding_the_same_corpus_writes_the_same_lexical_index(tmp_path, corpus_copy, settings, embedder):
    """The BM25 files of a fresh build of the seeds equal the committed ones byte for byte (no churn in git)."""
    s = settings.with_overrides(docs_dir=corpus_copy, index_dir=tmp_path / "idx")
    index_corpus(s, embedder, progress=False)
    committed = sorted((REPO / "index" / "bm25").iterdir())
    assert committed
    for path in committed:
        assert (s.index_dir / "bm25" / path.name).read_bytes() == path.read_bytes(), path.name


def test_stale_index_detected_and_rebuilt(tmp_path, corpus_copy, settings, embedder, caplog):
    s = settings.with_overrides(docs_dir=corpus_copy, index_dir=tmp_path / "idx")
    index_corpus(s, embedder, progress=False)
    target = corpus_copy / "001_fa8838ea44d7c2c5.txt"
    target.write_text(target.read_text(encoding="utf-8") + "\nA new closing sentence about Zanzibar.", encoding="utf-8")
    (corpus_copy / "new.md").write_text("Another document.", encoding="utf-8")
    with pytest.raises(StaleIndexError, match="new.md was added; 001_fa8838ea44d7c2c5.txt changed"):
        open_index(s, embedder, rebuild=False)
    with caplog.at_level(logging.WARNING):
        index = open_index(s, embedder, rebuild=True)
    assert "out of date" in caplog.text
    assert any("Zanzibar" in c.text for c in index.chunks)
    assert open_index(s, embedder, rebuild=False).manifest["n_documents"] == 6


def test_changed_settings_make_index_stale(tmp_path, corpus_copy, settings, embedder):
    s = settings.with_overrides(docs_dir=corpus_copy, index_dir=tmp_path / "idx")
    index_corpus(s, embedder, progress=False)
    with pytest.raises(StaleIndexError, match="chunk_max_chars"):
        open_index(s.with_overrides(chunk_max_chars=400), embedder, rebuild=False)


def test_binary_and_undecodable_files_skipped_with_warning(corpus_copy, caplog):
    (corpus_copy / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (corpus_copy / "latin1.md").write_bytes("café au lait".encode("latin-1"))
    with caplog.at_level(logging.WARNING):
        corpus = load_corpus(corpus_copy)
    assert "image.txt" in caplog.text and "latin1.md" in caplog.text
    assert set(corpus.skipped) == {"image.txt", "latin1.md"}
    assert len(corpus.documents) == 5


def test_missing_and_corrupt_index_give_clear_errors(tmp_path, corpus_copy, settings, embedder):
    s = settings.with_overrides(docs_dir=corpus_copy, index_dir=tmp_path / "idx")
    with pytest.raises(MissingIndexError, match="rag index"):
        open_index(s, embedder, rebuild=False)
    index_corpus(s, embedder, progress=False)
    (s.index_dir / "dense.faiss").write_bytes(b"garbage")
    with pytest.raises(CorruptIndexError, match="dense.faiss"):
        load_index(s.index_dir)
    (s.index_dir / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorruptIndexError, match="manifest.json"):
        load_index(s.index_dir)
