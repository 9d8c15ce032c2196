"""What could make the reader's forward pass cheaper on this CPU without moving an answer? A measurement,
not part of the product: `.venv/bin/python scripts/reader_speed_options.py` (after `rag index` on seeds/,
so the fp32 export is cached). On the seed questions' real retrieved passages it reports

1. how much text the reader reads twice because retrieved chunks of one document overlap (one sentence
   each), and
2. the forward pass p50 of the fp32 export and its int8 quantization, each as exported and after ONNX
   Runtime's transformer optimizer (fused GELU/LayerNorm/attention), each with the windows padded to the
   longest in one batch or run one at a time unpadded, with how far the logits move from fp32.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers import optimizer

from rag.config import Settings
from rag.offline.bench import load_questions
from rag.pipeline.qa import Pipeline
from rag.reader.folder import resolve_reader_model
from rag.runtime.onnx import cached_export, onnx_session

NAMES = ("input_ids", "attention_mask", "token_type_ids")


def read_twice(pipe: Pipeline, questions: list[str]) -> str:
    total = twice = touched = 0
    for q in questions:
        by_doc: dict[str, list[tuple[int, int]]] = {}
        for p in pipe.retriever.run(q):
            by_doc.setdefault(p.chunk.source, []).append((p.chunk.start, p.chunk.end))
        read = union = 0
        for spans in by_doc.values():
            spans.sort()
            start, end = spans[0]
            for s, e in spans[1:]:
                if s < end:
                    end = max(end, e)
                else:
                    union, (start, end) = union + end - start, (s, e)
            union += end - start
            read += sum(e - s for s, e in spans)
        total, twice, touched = total + read, twice + read - union, touched + (read > union)
    return (f"{len(questions)} seed questions: {touched} retrieve overlapping chunks of one document; "
            f"{twice:,} of {total:,} characters read ({100 * twice / total:.1f}%) are read twice")


def batches_of(pipe: Pipeline, questions: list[str]) -> list[dict[str, np.ndarray]]:
    reader, out = pipe.reader, []
    for q in questions:
        contexts = [p.chunk.text for p in pipe.retriever.run(q)]
        enc = reader.encode([q] * len(contexts), contexts)
        rows = np.asarray(reader.kept_windows(enc, reader.max_windows))
        longest = int(np.asarray(enc["attention_mask"])[rows].sum(axis=1).max())
        out.append({n: np.asarray(enc[n])[rows][:, :longest].astype(np.int64) for n in NAMES})
    return out


def padded(session, batch):
    return session.run(["start_logits", "end_logits"], batch)


def one_at_a_time(session, batch):
    width, starts, ends = batch["input_ids"].shape[1], [], []
    for i in range(len(batch["input_ids"])):
        k = int(batch["attention_mask"][i].sum())
        s, e = session.run(["start_logits", "end_logits"], {n: v[i : i + 1, :k] for n, v in batch.items()})
        starts.append(np.pad(s, ((0, 0), (0, width - k)), constant_values=-1e4))
        ends.append(np.pad(e, ((0, 0), (0, width - k)), constant_values=-1e4))
    return np.concatenate(starts), np.concatenate(ends)


def main() -> None:
    settings = Settings()
    pipe = Pipeline.from_settings(settings, rebuild=False)
    questions = load_questions()
    print(read_twice(pipe, questions))
    fp32 = cached_export("reader", resolve_reader_model(settings.reader_model))
    if fp32 is None:
        raise SystemExit("no cached fp32 export of the reader: run `rag index` first")
    batches = batches_of(pipe, questions)
    real = np.mean([b["attention_mask"].sum() for b in batches])
    print(f"windows per question {np.mean([len(b['input_ids']) for b in batches]):.1f}; tokens per question "
          f"{real:.0f} real, {np.mean([b['input_ids'].size for b in batches]):.0f} padded to the longest")
    tmp = Path(tempfile.mkdtemp())
    fused = optimizer.optimize_model(str(fp32), model_type="bert", num_heads=0, hidden_size=0, opt_level=1)
    print("fused:", {k: v for k, v in fused.get_fused_operator_statistics().items() if v})
    fused.save_model_to_file(str(tmp / "fused.onnx"))
    for src, dst in ((fp32, tmp / "int8.onnx"), (tmp / "fused.onnx", tmp / "fused-int8.onnx")):
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    reference = onnx_session(fp32)
    ref = [padded(reference, b) for b in batches]
    print("| model | windows | forward p50 (ms) | max abs. logit change vs fp32 |\n|---|---|---:|---:|")
    for name, path in (("fp32", fp32), ("fp32 fused", tmp / "fused.onnx"), ("int8", tmp / "int8.onnx"),
                       ("int8 fused", tmp / "fused-int8.onnx")):
        session = onnx_session(path)
        for mode, run in (("padded, one batch", padded), ("one at a time, unpadded", one_at_a_time)):
            for b in batches[:3]:
                run(session, b)
            times, change = [], 0.0
            for _ in range(3):
                for b, r in zip(batches, ref):
                    started = time.perf_counter()
                    out = run(session, b)
                    times.append(time.perf_counter() - started)
                    mask = b["attention_mask"] == 1
                    change = max(change, float(np.abs(out[0] - r[0])[mask].max()), float(np.abs(out[1] - r[1])[mask].max()))
            print(f"| {name} | {mode} | {1000 * np.median(times):.1f} | {change:.4f} |", flush=True)


if __name__ == "__main__":
    main()
