"""The torch-free runtime (rag.runtime): the reader's windows through `tokenizers` alone equal the ones
transformers makes for training; the cached fp32 ONNX exports give the same embeddings and the same answers
as torch; a one-shot `rag ask` then imports no torch; a damaged export falls back to torch."""
import json
import sys

import numpy as np
import pytest

from rag.config import PACKAGED_READER_DIR
from rag.pipeline.qa import Pipeline
from rag.reader.model import tokenize_pairs
from rag.runtime.onnx import cached_export, export_path
from rag.runtime.windows import PairTokenizer

from helpers import REPO, SEEDS, cli
from helpers.questions import ANSWERABLE, UNANSWERABLE


@pytest.fixture(scope="module")
def exports(settings):
    """The fp32 exports `rag index` makes, in this session's cache."""
    from rag.pipeline.fast_start import prepare_fast_start

    prepare_fast_start(settings)
    from rag.store.embedding import resolve_embedding_model

    found = {"embedder": cached_export("embedder", resolve_embedding_model(settings.embedding_model)),
             "reader": cached_export("reader", PACKAGED_READER_DIR)}
    assert all(found.values()), found
    return found


@pytest.fixture(scope="module")
def torch_pipeline(settings, seed_index):
    """Embedder and reader through torch, whatever the cache holds."""
    from rag.store.embedding import Embedder

    embedder = Embedder(settings.embedding_model, backend="torch")
    pipeline = Pipeline.from_settings(settings.with_overrides(reader_backend="torch"), index=seed_index,
                                      embedder=embedder)
    assert (embedder.runtime, pipeline.reader.runtime) == ("sentence-transformers (torch fp32)", "torch fp32")
    return pipeline


@pytest.fixture(scope="module")
def onnx_pipeline(settings, seed_index, exports):
    from rag.store.embedding import Embedder

    embedder = Embedder(settings.embedding_model)
    pipeline = Pipeline.from_settings(settings, index=seed_index, embedder=embedder)
    assert (embedder.runtime, pipeline.reader.runtime) == ("onnxruntime fp32", "onnxruntime fp32")
    return pipeline


def test_windows_without_transformers_equal_the_training_tokenisation():
    from transformers import AutoTokenizer

    texts = [p.read_text(encoding="utf-8") for p in sorted(SEEDS.iterdir())]
    questions = ["  Who did Anthropic hire to lead its infrastructure effort?\n", "What is the capital of France?"] * 3
    contexts = [texts[0][:6000], texts[1][:300], texts[2], "Short.", texts[3][:2500], "Ünïcode — “quotes” and\ttabs."]
    expected = tokenize_pairs(AutoTokenizer.from_pretrained(PACKAGED_READER_DIR), questions, contexts, 384, 128,
                              padding="longest", return_tensors="np")
    got = PairTokenizer.from_folder(PACKAGED_READER_DIR, 384, 128).windows(questions, contexts)
    assert len(got["input_ids"]) > len(contexts), "long contexts must overflow into several windows"
    for name in ("input_ids", "token_type_ids", "attention_mask", "offset_mapping", "overflow_to_sample_mapping"):
        assert np.array_equal(np.asarray(expected[name]), got[name]), name
    assert all(expected.sequence_ids(w) == got.sequence_ids(w) for w in range(len(got["input_ids"])))


@pytest.mark.slow
def test_onnx_embedder_gives_sentence_transformers_vectors(torch_pipeline, onnx_pipeline, seed_index):
    texts = [c.text for c in seed_index.chunks[:40]] + [q for q, _, _ in ANSWERABLE] + ["  padded question  "]
    torch_vectors = torch_pipeline.retriever.embedder.run(texts)
    onnx_vectors = onnx_pipeline.retriever.embedder.run(texts)
    assert np.abs(torch_vectors - onnx_vectors).max() < 1e-5


@pytest.mark.parametrize("question", [q for q, _, _ in ANSWERABLE] + UNANSWERABLE)
def test_onnx_fp32_pipeline_answers_like_torch(torch_pipeline, onnx_pipeline, question):
    a, b = torch_pipeline.run(question), onnx_pipeline.run(question)
    assert (a.answer, [c.start for c in a.citations]) == (b.answer, [c.start for c in b.citations])
    assert abs(a.score - b.score) < 1e-3


def test_one_shot_ask_imports_no_torch(exports):
    """With the exports made, a cold `rag ask` answers through ONNX Runtime and never imports torch,
    transformers, sentence-transformers, scikit-learn or FastAPI (that is what makes it start fast)."""
    code = ("import sys, io, contextlib\nfrom rag.cli import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    main(['ask', '--json', '--no-rebuild', 'Who did Anthropic hire to lead its infrastructure effort?'])\n"
            "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'sklearn', 'fastapi') if m in sys.modules]\n"
            "print(out.getvalue())\nprint('HEAVY', heavy)")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    answer = json.loads(out.stdout.split("HEAVY")[0])
    assert answer["answer"] == "Eric Boyd"


@pytest.mark.slow
def test_index_command_makes_the_exports_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_CACHE", str(tmp_path / "cache"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Eric Boyd leads the infrastructure effort at Anthropic.", encoding="utf-8")
    first = cli("index", "--docs", docs, "--index", tmp_path / "index")
    assert first.returncode == 0, first.stderr
    assert "exported the embedder" in first.stdout and "exported the reader" in first.stdout
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2
    again = cli("index", "--docs", docs, "--index", tmp_path / "index")
    assert again.returncode == 0 and "exported" not in again.stdout


def test_damaged_export_falls_back_to_torch(tmp_path, monkeypatch, caplog):
    from rag.reader.model import Reader

    monkeypatch.setenv("RAG_CACHE", str(tmp_path))
    path = export_path("reader", PACKAGED_READER_DIR)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an onnx model")
    reader = Reader()
    reader.warm_up()
    assert reader.runtime == "torch fp32"
    assert "running the reader through torch" in caplog.text
    readings = reader.run("Who leads the effort?", ["Eric Boyd leads the effort."])
    assert readings[0].spans[0].text == "Eric Boyd"


def test_a_new_export_removes_the_stale_ones_of_the_same_weights(tmp_path, monkeypatch):
    from rag.runtime.onnx import record_export

    monkeypatch.setenv("RAG_CACHE", str(tmp_path / "cache"))
    model, other = tmp_path / "model", tmp_path / "other"
    for folder in (model, other):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights v1")

    def fake_export(kind, folder):
        path = export_path(kind, folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"onnx")
        return path, record_export(kind, folder, path)

    old, removed = fake_export("reader", model)
    kept, _ = fake_export("reader", other)
    embedder, _ = fake_export("embedder", model)
    assert removed == []
    (model / "model.safetensors").write_bytes(b"weights v2, retrained")  # new size and mtime: a new key
    new, removed = fake_export("reader", model)
    assert new != old and sorted(removed) == sorted([old, old.with_suffix(".json")])
    assert new.is_file() and kept.is_file() and embedder.is_file()  # other weights, other kinds stay
    (other / "model.safetensors").unlink()
    _, removed = fake_export("reader", model)
    assert not kept.exists() and kept in removed  # the weights it came from are gone


def test_a_distilbert_reader_exports_and_reads_like_torch(tmp_path, monkeypatch):
    """DistilBERT (the usual Haystack reader) has no token_type_ids: the export takes its inputs by name,
    and both runtimes feed the model only the inputs it has."""
    import shutil

    import torch
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    from rag.pipeline.fast_start import export_fp32
    from rag.reader.model import Reader

    monkeypatch.setenv("RAG_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "distilbert"
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=30522, dim=32, hidden_dim=64, n_layers=2, n_heads=2)
    DistilBertForQuestionAnswering(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(PACKAGED_READER_DIR / name, folder / name)
    export_fp32("reader", folder)
    question, contexts = "Who leads the effort?", ["Eric Boyd leads the effort.", "Paris is the capital of France."]
    spans = {}
    for backend in ("auto", "torch"):
        reader = Reader(str(folder), backend=backend)
        reader.warm_up()
        spans[reader.runtime] = [(s.start, s.end, round(s.score, 3)) for r in reader.run(question, contexts) for s in r.spans]
    assert set(spans) == {"onnxruntime fp32", "torch fp32"}
    assert spans["onnxruntime fp32"] == spans["torch fp32"] and spans["torch fp32"]
