"""The reader's runtime per CPU: the candidates a CPU's flags allow, the choice by measurement (cached per
machine), bf16 autocast held to the gold answers, and window lengths bucketed without changing an answer.
Nothing here depends on how this CPU rounds or which runtime wins on it."""
import json

import pytest

from rag.runtime.choice import cached_choice, candidates, choose

from helpers import REPO


def test_candidates_follow_the_cpu_flags():
    assert candidates(True, {"avx2"}) == ["torch", "onnx-fp32"]
    assert candidates(True, {"avx2", "avx512_bf16"}) == ["torch", "torch-bf16", "onnx-fp32"]
    assert candidates(False, {"amx_bf16"}) == ["torch", "torch-bf16"]


def test_the_fastest_runtime_that_keeps_the_answers_is_chosen():
    assert choose({"torch": 170.0, "torch-bf16": 65.0, "onnx-fp32": 220.0}, {"torch-bf16": True})[0] == "torch-bf16"
    backend, why = choose({"torch": 170.0, "torch-bf16": 65.0, "onnx-fp32": 150.0}, {"torch-bf16": False})
    assert backend == "onnx-fp32" and "torch-bf16 left out" in why and "150 ms" in why


@pytest.mark.slow
def test_a_server_measures_once_per_machine_and_reads_the_record_after(monkeypatch):
    from rag.reader.model import Reader

    reader = Reader(measure_runtime=True, backend="auto")
    reader.warm_up()
    choice = reader.runtime_choice
    assert choice is not None and choice.backend in candidates(has_export=True)
    assert set(choice.forward_ms) <= {"torch", "torch-bf16", "onnx-fp32"} and choice.backend in choice.forward_ms
    assert reader.runtime == {"torch": "torch fp32", "torch-bf16": "torch bf16", "onnx-fp32": "onnxruntime fp32"}[choice.backend]
    monkeypatch.setattr("rag.runtime.choice.measure", lambda *a, **k: pytest.fail("measured twice"))
    again = Reader(measure_runtime=True, backend="auto")
    again.warm_up()
    assert again.runtime_choice == choice == cached_choice(again.resolved_path(), again)


def _seed_items(n):
    return [json.loads(line) for line in (REPO / "eval" / "qa.jsonl").read_text().splitlines() if line.strip()][:n]


@pytest.mark.slow
def test_bf16_autocast_is_held_to_the_gold_answers(pipeline):
    """An approximate runtime is scored against the gold answers (F1), within a stated tolerance of fp32's
    score, never span for span against fp32's rounding."""
    from rag.offline.squad import score_prediction
    from rag.pipeline.qa import Pipeline
    from rag.reader.model import Reader

    items = [i for i in _seed_items(40) if i["answers"]][:16]
    f1 = {}
    for backend in ("torch", "torch-bf16"):
        run = Pipeline(pipeline.retriever, Reader(backend=backend), pipeline.documents)
        f1[backend] = [score_prediction(run.run(i["question"]).answer, i["answers"])[1] for i in items]
        if backend == "torch-bf16":
            assert run.reader.runtime == "torch bf16"
    # Stated tolerance: on these 16 questions bf16 may lose at most one answer's worth of F1 against fp32.
    assert sum(f1["torch-bf16"]) >= sum(f1["torch"]) - 1.0, f1


def test_bucketed_window_lengths_change_no_answer(pipeline):
    from rag.reader.model import Reader

    contexts = [p.chunk.text for p in pipeline.search("Who did Anthropic hire to lead its infrastructure effort?")]
    question = "Who did Anthropic hire to lead its infrastructure effort?"
    plain, bucketed = Reader(backend="torch", length_bucket=1), Reader(backend="torch", length_bucket=64)
    for a, b in zip(plain.run(question, contexts), bucketed.run(question, contexts)):
        assert [s.text for s in a.spans[:5]] == [s.text for s in b.spans[:5]]
        assert a.spans[0].score == pytest.approx(b.spans[0].score, abs=1e-3)


def test_the_default_bucket_is_the_runtimes_own(monkeypatch):
    """reader_length_bucket 0 (the default): no padding for torch, 16 for ONNX Runtime, 32 for bf16 on a CPU
    with AMX (kernels built per shape); a bucket set by name wins."""
    import rag.runtime.cpu
    from rag.reader.model import Reader

    reader = Reader(backend="torch")
    reader.warm_up()
    assert reader.length_bucket == 0 and reader.runtime == "torch fp32" and reader.bucket == 1
    reader.runtime = "onnxruntime fp32"
    assert reader.bucket == 16
    reader.runtime = "torch bf16"
    monkeypatch.setattr(rag.runtime.cpu, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert reader.bucket == 1
    monkeypatch.setattr(rag.runtime.cpu, "cpu_flags", lambda: {"avx512f", "avx512_bf16", "amx_bf16"})
    assert reader.bucket == 32
    assert Reader(backend="torch", length_bucket=64).bucket == 64
    with pytest.raises(ValueError, match="length_bucket"):
        Reader(length_bucket=-1)


def test_a_measurement_is_not_reused_for_another_length_bucket_or_window():
    """The padded width changes which runtime is fastest, so the record is kept per bucket and window."""
    from rag.reader.model import Reader
    from rag.runtime.choice import cache_key

    folder = Reader().resolved_path()
    keys = {cache_key(folder, Reader(length_bucket=b, max_seq_length=n)) for b in (0, 64) for n in (256, 384)}
    assert len(keys) == 4 and cache_key(folder, Reader()) == cache_key(folder, Reader())
