
from rag.ingest.chunking import chunk_document, sentence_spans, sentences_around
from rag.ingest.files import load_corpus
from rag.records import Document

from helpers import SEEDS
from helpers.documents import base64_text, spaceless_chinese


def test_offsets_exact_on_every_seed_and_cover_all_text():
    corpus = load_corpus(SEEDS)
    assert len(corpus.documents) == 5
    for doc in corpus.documents:
        chunks = chunk_document(doc, max_chars=700, overlap_sentences=1)
        assert chunks
        covered = set()
        for c in chunks:
            assert doc.text[c.start : c.end] == c.text
            assert c.source == doc.source
            assert len(c.text) <= 700
            covered.update(range(c.start, c.end))
        # every non-space character of the document is in some chunk
        assert all(i in covered for i, ch in enumerate(doc.text) if not ch.isspace())


def test_chunks_never_cut_a_word():
    corpus = load_corpus(SEEDS)
    for doc in corpus.documents:
        for c in chunk_document(doc, max_chars=120, overlap_sentences=1):
            assert c.start == 0 or doc.text[c.start - 1].isspace()
            assert c.end == len(doc.text) or doc.text[c.end].isspace()


def test_consecutive_chunks_overlap_by_a_sentence():
    doc = Document("d.txt", " ".join(f"Sentence number {i} is here." for i in range(40)))
    chunks = chunk_document(doc, max_chars=100, overlap_sentences=1)
    assert len(chunks) > 3
    for a, b in zip(chunks, chunks[1:]):
        assert b.start < a.end  # overlap
        assert b.start > a.start  # progress


def test_sentence_spans_handle_quotes_and_newlines():
    text = "He said “hi.” Then left!\nNew paragraph? Yes"
    spans = [text[s:e] for s, e in sentence_spans(text)]
    assert spans == ["He said “hi.”", "Then left!", "New paragraph?", "Yes"]


def test_sentences_around_a_span():
    """The whole sentences around a span (what a citation quotes, extra=0; what `rag show` prints, extra=1)."""
    text = "One is here. Two has the words. Three follows.\n\nFour starts. Five."
    spans = sentence_spans(text)

    def around(start, end, extra=0):
        lo, hi = sentences_around(spans, start, end, extra)
        return text[lo:hi]

    two = text.index("the words")
    assert around(two, two + 9) == "Two has the words."
    assert around(two, two + 9, extra=1) == "One is here. Two has the words. Three follows."
    assert around(0, 3, extra=2) == "One is here. Two has the words. Three follows."  # clipped at the ends
    assert around(two, text.index("Four") + 4) == text[text.index("Two"):text.index("Four starts.") + 12]
    last = text.index("Five")
    assert around(last, len(text), extra=1) == "Four starts. Five."
    gap = text.index("\n\n")  # a span of white space between sentences: the sentence after it, and the span
    assert around(gap, gap + 2) == "\n\nFour starts."
    assert sentences_around([], 2, 5, extra=1) == (2, 5)  # no sentences (all white space): the span itself


def test_overlong_sentence_split_between_words():
    doc = Document("d.txt", "word " * 100)
    chunks = chunk_document(doc, max_chars=50, overlap_sentences=0)
    assert all(len(c.text) <= 50 and c.text.split() == ["word"] * len(c.text.split()) for c in chunks)
    assert sum(len(c.text.split()) for c in chunks) == 100


def test_spaceless_text_is_chunked_by_characters_with_exact_offsets():
    doc = Document("blob.txt", "Intro sentence. " + spaceless_chinese(35_000) + " Outro.")
    chunks = chunk_document(doc, 700, 1)
    assert len(chunks) > 150 and max(len(c.text) for c in chunks) <= 700 // 4 + 15  # a wide character counts 4
    assert all(doc.text[c.start : c.end] == c.text for c in chunks)
    assert "".join(c.text for c in chunks[1:-1]) == spaceless_chinese(35_000)


def test_encoded_data_is_left_out_of_the_passages():
    blob = base64_text(100_000)
    doc = Document("note.md", f"The logo is below.\n![logo](data:image/png;base64,{blob})\nIt was drawn in 1999.")
    chunks = chunk_document(doc, 700, 1)
    assert all(doc.text[c.start : c.end] == c.text for c in chunks)
    assert max(len(c.text) for c in chunks) < 100 and chunks[-1].text.endswith("It was drawn in 1999.")
    assert not chunk_document(Document("blob.txt", blob), 700, 1)


def test_a_passage_never_spans_encoded_data_even_when_passages_are_long():
    text = "Here is data: " + "A" * 1200 + " and more text. The end."
    chunks = chunk_document(Document("d.txt", text), 3000, 1)
    assert all("A" * 100 not in c.text for c in chunks)
    assert [c.text for c in chunks] == ["Here is data:", "and more text. The end."]
