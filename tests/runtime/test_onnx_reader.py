"""The int8 ONNX reader: same windows, offsets and span scoring as the fp32 torch reader, only the forward
pass differs; on the seed questions it gives the gold answers (held to those, never span for span to fp32:
int8 rounds differently per CPU). And the CLI's --help imports no torch."""
import subprocess
import sys

import pytest

from rag.config import PACKAGED_READER_DIR
from rag.pipeline.qa import Pipeline
from rag.reader.folder import ONNX_FILE, ReaderError
from rag.reader.model import Reader

from helpers import REPO
from helpers.questions import ANSWERABLE, UNANSWERABLE


@pytest.fixture(scope="module")
def onnx_pipeline(settings, seed_index, embedder, tmp_path_factory):
    """The packaged reader exported by `rag export-reader`'s code into a copy of its folder."""
    import shutil

    from rag.offline.export import export_reader

    folder = tmp_path_factory.mktemp("onnx") / "reader"
    shutil.copytree(PACKAGED_READER_DIR, folder)
    # the reduced range on every CPU, so these tests (and the strict xfail below) mean the same with or without VNNI
    record = export_reader(str(folder), full_range=False)
    assert (folder / ONNX_FILE).is_file() and record["file"] == ONNX_FILE and record["reduce_range"] is True
    return Pipeline.from_settings(settings.with_overrides(reader_model=str(folder), reader_backend="onnx"),
                                  index=seed_index, embedder=embedder)


# int8 is an approximate runtime: how it rounds depends on the CPU (VNNI/AMX or not), so these tests hold it
# to the gold answers, never to the fp32 reader's exact spans (fp32 ONNX against fp32 torch: tests/runtime/test_runtime.py).


@pytest.mark.slow
@pytest.mark.parametrize("question,expected,source", ANSWERABLE)
def test_int8_reader_answers_the_seed_questions_with_the_gold_answer(onnx_pipeline, question, expected, source):
    answer = onnx_pipeline.run(question)
    assert answer.answer is not None and expected in answer.answer
    assert answer.citations[0].source == source
    document = onnx_pipeline.documents[source]
    assert all(document.text[c.start : c.end] == answer.answer for c in answer.citations if c.source == source)


@pytest.mark.slow
@pytest.mark.parametrize("question", UNANSWERABLE)
def test_int8_pipeline_abstains_where_the_documents_do_not_say(onnx_pipeline, question):
    assert onnx_pipeline.run(question).answer is None


@pytest.mark.slow
def test_int8_reader_scores_spans_close_to_the_torch_reader(pipeline, onnx_pipeline):
    """The answer's passage: int8's best span is the gold answer, with a score and every passage's no-answer
    score within 1.5 logits of fp32's (the stated tolerance; the measured gap is a few tenths)."""
    contexts = [p.chunk.text for p in pipeline.retriever.run(ANSWERABLE[0][0])]
    torch_read = pipeline.reader.run(ANSWERABLE[0][0], contexts)
    onnx_read = onnx_pipeline.reader.run(ANSWERABLE[0][0], contexts)
    best = max(range(len(torch_read)), key=lambda i: torch_read[i].spans[0].score)
    t, o = torch_read[best], onnx_read[best]
    assert ANSWERABLE[0][1] in o.spans[0].text
    assert abs(t.spans[0].score - o.spans[0].score) < 1.5
    assert all(abs(t.null_score - o.null_score) < 1.5 for t, o in zip(torch_read, onnx_read))


@pytest.mark.slow
def test_a_static_export_quantizes_only_weight_products_between_the_kept_layers(tmp_path, seed_index, embedder, settings):
    """`rag export-reader --static`: activations quantized with ranges from real windows, except the first and
    last encoder layers, the QA head and the products of two activations; it serves through the same
    pipeline, and finds the gold answer among its best spans in the gold passage (never held to fp32's
    exact spans: int8 rounds per CPU)."""
    import re
    import shutil

    import onnx

    from rag.offline.export import export_reader

    folder = tmp_path / "reader"
    shutil.copytree(PACKAGED_READER_DIR, folder, ignore=shutil.ignore_patterns(ONNX_FILE))
    record = export_reader(str(folder), full_range=False, static=True, keep_float=1, calibration_windows=16)
    assert "static QDQ" in record["quantization"] and "encoder layer 0, encoder layer 5, the QA head" in record["quantization"]
    assert record["command"].endswith("--static --keep-float 1")
    graph = onnx.load(str(folder / ONNX_FILE)).graph
    made = {o: n for n in graph.node for o in n.output}
    quantized = {n.name for n in graph.node if n.op_type == "MatMul"
                 and any(made.get(i) is not None and made[i].op_type == "DequantizeLinear" for i in n.input)}
    layers = {int(m.group(1)) for n in quantized if (m := re.search(r"layer\.(\d+)/", n))}
    assert layers == {1, 2, 3, 4}
    assert not any("qa_outputs" in n or n.endswith(("self/MatMul", "self/MatMul_1")) for n in quantized)
    pipeline = Pipeline.from_settings(settings.with_overrides(reader_model=str(folder), reader_backend="onnx"),
                                      index=seed_index, embedder=embedder)
    question, expected, source = ANSWERABLE[0]
    gold = next(p for p in pipeline.retriever.run(question) if expected in p.chunk.text)
    [reading] = pipeline.reader.run(question, [gold.chunk.text])
    assert pipeline.reader.runtime == "onnxruntime int8"
    assert any(expected in s.text for s in reading.spans[:5])
    assert all(gold.chunk.text[s.start : s.end] == s.text for s in reading.spans)


def test_missing_onnx_export_is_a_clear_error(tmp_path):
    import shutil

    folder = tmp_path / "reader"
    shutil.copytree(PACKAGED_READER_DIR, folder, ignore=shutil.ignore_patterns(ONNX_FILE))
    with pytest.raises(ReaderError, match="rag export-reader"):
        Reader(str(folder), backend="onnx").warm_up()


def test_help_imports_no_torch():
    code = ("import sys\nfrom rag.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'fastapi', 'sklearn', 'transformers') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow
def test_a_full_range_export_warns_on_a_cpu_without_vnni(onnx_pipeline, tmp_path, monkeypatch, caplog):
    """An int8 export made on a VNNI/AMX machine (full int8 range) can overflow on AVX2: loading it there says so."""
    import shutil

    import rag.reader.model
    from rag.reader.folder import load_reader_meta, write_reader_meta
    from rag.reader.model import Reader

    folder = tmp_path / "reader"
    shutil.copytree(onnx_pipeline.reader.model_name, folder)
    meta = load_reader_meta(folder)
    meta["onnx"]["reduce_range"] = False
    write_reader_meta(folder, meta)
    monkeypatch.setattr(rag.reader.model, "has_int8_dot_product", lambda: False)
    reader = Reader(str(folder), backend="onnx")
    reader.warm_up()
    assert reader.runtime == "onnxruntime int8" and "may overflow" in caplog.text
    monkeypatch.setattr(rag.reader.model, "has_int8_dot_product", lambda: True)
    caplog.clear()
    Reader(str(folder), backend="onnx").warm_up()
    assert "may overflow" not in caplog.text
