"""`rag export-reader`: the reader as an int8 ONNX model for ONNX Runtime, written beside its safetensors
(the fp32 exports `rag index` makes for fast start are rag.pipeline.fast_start's).

Exported from the stored weights with torch's ONNX exporter (dynamic batch and sequence length), then
quantized by ONNX Runtime's own dynamic quantization: int8 weights per output channel (the full range on a
CPU with VNNI or AMX; the reduced range that CPUs without them, AVX2 only, need to avoid overflow),
activations quantized on the fly.
Per-tensor int8 changed the reader's best span on seed questions; per-channel keeps it."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

from rag.config import Settings
from rag.pipeline.fast_start import export_fp32
from rag.reader.folder import ONNX_FILE, ReaderError, load_reader_meta, resolve_reader_model, write_reader_meta
from rag.runtime.cpu import has_int8_dot_product

log = logging.getLogger(__name__)


def export_reader(model: str, full_range: bool | None = None, static: bool = False, keep_float: int = 1,
                  calibration_windows: int = 64) -> dict:
    """Write `reader-int8.onnx` into the reader's folder and record it in the reader's metadata. Weights
    use the full int8 range when `full_range`, by default when this CPU has VNNI or AMX. With `static`,
    activations are quantized too, with ranges measured on `calibration_windows` real windows, and the first
    and last `keep_float` encoder layers and the QA head stay fp32 (static_quantize)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if keep_float < 0:
        raise ReaderError(f"--keep-float must be 0 or more, not {keep_float}")
    folder = Path(resolve_reader_model(model))
    started = time.time()
    weights = folder / "model.safetensors"

    def weights_sha() -> str | None:
        return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None

    source_sha = weights_sha()  # before the export: what the export is made from
    # Full int8 range where the CPU has VNNI/AMX; without them (AVX2) ONNX Runtime's u8s8 products can
    # saturate, so the weights keep 7 bits (reduce_range), which costs some accuracy.
    full_range = has_int8_dot_product() if full_range is None else full_range
    target = folder / ONNX_FILE
    partial = folder / f"{ONNX_FILE}.{os.getpid()}.tmp"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_fp32("reader", folder, Path(tmp) / "reader.onnx")
            if static:
                kept = static_quantize(fp32, partial, folder, keep_float, calibration_windows, not full_range)
            else:
                quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8, per_channel=True,
                                 reduce_range=not full_range, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        if weights_sha() != source_sha:
            raise ReaderError(f"the weights in {folder} changed during the export; run it again")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    record = {
        "file": ONNX_FILE,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "exported_from_sha256": source_sha,
        "quantization": (f"ONNX Runtime static QDQ, uint8 activations (99.999th percentile over {calibration_windows}"
                         f" windows of the shipped SQuAD 2.0 dev paragraphs), int8 weights per channel; fp32 kept for {kept}"
                         if static else "ONNX Runtime dynamic, int8 weights per channel")
                        + f" ({'full range: CPU with VNNI/AMX' if full_range else 'reduced range: CPU without VNNI'}), opset 17",
        "reduce_range": not full_range,
        "seconds": round(time.time() - started, 1),
        "command": f"rag export-reader --model {model}" + (f" --static --keep-float {keep_float}" if static else ""),
    }
    meta = load_reader_meta(folder)
    meta["onnx"] = record
    write_reader_meta(folder, meta)
    return record


def static_quantize(fp32: Path, target: Path, folder: Path, keep_float: int, windows: int, reduce_range: bool,
                    method: str = "percentile") -> str:
    """Static (QDQ) int8 quantization of the fp32 reader export (opt-in: no variant kept the answers; the
    docs/runtimes.md's int8 table): activation ranges measured by `method` on real question/paragraph windows,
    tokenised as the reader serves them; the first and last `keep_float` encoder layers and the QA head left
    in fp32. Activations are uint8 (u8s8 products: int8 activations ran slower than fp32 here). Returns what
    was kept in fp32."""
    import re

    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from rag.offline.import_reader import SHIPPED_CALIBRATION
    from rag.offline.squad import load_squad
    from rag.runtime.windows import PairTokenizer

    settings = Settings()
    tokenizer = PairTokenizer.from_folder(folder, settings.max_seq_length, settings.doc_stride)
    graph = onnx.load(str(fp32), load_external_data=False).graph
    names = {i.name for i in graph.input}
    questions = load_squad(SHIPPED_CALIBRATION)[::3]  # spread over the articles, a paragraph seldom twice
    feeds = []
    for i in range(0, len(questions), 8):
        part = questions[i : i + 8]
        enc = tokenizer.windows([q.question for q in part], [q.context for q in part])
        # Each window padded to the full length (masked, as served): histogram calibrations need one shape.
        full = {n: np.pad(enc[n], ((0, 0), (0, settings.max_seq_length - enc[n].shape[1])),
                          constant_values=tokenizer.pad if n == "input_ids" else 0) for n in names}
        feeds += [{n: full[n][w : w + 1] for n in names} for w in range(len(enc["input_ids"]))]
        if len(feeds) >= windows:
            break

    class Windows(CalibrationDataReader):
        def __init__(self) -> None:
            self.rest = iter(feeds[:windows])

        def get_next(self):
            return next(self.rest, None)

    layers = sorted({int(m.group(1)) for n in graph.node if (m := re.search(r"layer\.(\d+)/", n.name))})
    float_layers = set(layers[:keep_float] + layers[len(layers) - keep_float:]) if keep_float else set()
    weights = {i.name for i in graph.initializer}
    # Products of two activations (attention scores, and their sum of values) stay fp32, as in dynamic
    # quantization: only products with a weight matrix are int8.
    exclude = [n.name for n in graph.node
               if "qa_outputs" in n.name or not any(i in weights for i in n.input)
               or ((m := re.search(r"layer\.(\d+)/", n.name)) and int(m.group(1)) in float_layers)]
    prepared = fp32.with_name("reader-prepared.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(target), Windows(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=exclude, op_types_to_quantize=["MatMul", "Gemm"],
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                                      "entropy": CalibrationMethod.Entropy}[method],
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    kept = [f"encoder layer {i}" for i in sorted(float_layers)] + ["the QA head"]
    return ", ".join(kept)
