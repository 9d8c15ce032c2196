import pytest

from rag.pipeline.retrieval import Retriever, fuse

SEED_QUESTIONS = [
    ("Who mentored Karpathy during his PhD?", "004_81a3bf9f650335dc.txt"),
    ("Which company did Eric Boyd come from?", "001_fa8838ea44d7c2c5.txt"),
    ("What feature did Anthropic launch for enterprise clients?", "001_fa8838ea44d7c2c5.txt"),
]


@pytest.mark.parametrize("question,source", SEED_QUESTIONS)
def test_hybrid_puts_the_right_file_first(seed_index, embedder, question, source):
    passages = Retriever(seed_index, embedder, top_k=5).run(question)
    assert passages[0].chunk.source == source
    assert len(passages) == 5
    assert [p.score for p in passages] == sorted([p.score for p in passages], reverse=True)
    for p in passages:
        assert seed_index.documents[p.chunk.source].text[p.chunk.start : p.chunk.end] == p.chunk.text


def test_modes_are_selectable(seed_index, embedder):
    for mode in ("dense", "bm25"):
        passages = Retriever(seed_index, embedder, mode=mode, top_k=3).run("Karpathy joins Anthropic")
        assert len(passages) == 3
    with pytest.raises(ValueError):
        Retriever(seed_index, embedder, mode="magic")
    with pytest.raises(ValueError):
        Retriever(seed_index, embedder, top_k=0)


def test_bm25_with_no_known_term_returns_nothing(seed_index, embedder):
    assert Retriever(seed_index, embedder, mode="bm25").run("xyzzy qwertyuiop") == []


def test_weighted_rrf():
    fused = fuse([[(1, 0.9), (2, 0.8)], [(2, 5.0), (3, 4.0)]], [1.0, 1.0], rrf_k=0)
    assert [i for i, _ in fused] == [2, 1, 3]
    assert fused[0][1] == pytest.approx(1 / 2 + 1 / 1)
