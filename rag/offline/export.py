"""ONNX exports. `rag export-reader`: the reader as an int8 ONNX model for ONNX Runtime, written beside its
safetensors. `prepare_fast_start` (run by `rag index`): the embedder and the reader in fp32, cached where
rag.runtime finds them, so later processes answer without importing torch.

Exported from the stored weights with torch's ONNX exporter (dynamic batch and sequence length), then
quantized by ONNX Runtime's own dynamic quantization: int8 weights per output channel (the full range on a
CPU with VNNI or AMX; the reduced range that CPUs without them, AVX2 only, need to avoid overflow),
activations quantized on the fly.
Per-tensor int8 changed the reader's best span on seed questions; per-channel keeps it."""
from __future__ import annotations

import hashlib
import inspect
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

from rag.config import Settings
from rag.reader.folder import ONNX_FILE, ReaderError, load_qa_model, load_reader_meta, resolve_reader_model, write_reader_meta
from rag.runtime.cpu import has_int8_dot_product
from rag.runtime.onnx import cached_export, export_path, record_export

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
    README's int8 table): activation ranges measured by `method` on real question/paragraph windows,
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


def export_fp32(kind: str, folder: str | Path, target: Path | None = None) -> Path:
    """Export model `folder` ("embedder": its encoder's last hidden state; "reader": start and end logits)
    to fp32 ONNX at `target`, by default its place in the cache (written beside, then renamed, so a cut-off
    export is never loaded)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    in_cache = target is None
    target = target or export_path(kind, folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if kind == "reader":
        model = load_qa_model(folder, str(folder))
        outputs = ["start_logits", "end_logits"]
        example = tokenizer(["Who led it?"] * 2, ["Eric Boyd led the effort."] * 2, return_tensors="pt", padding=True)
    else:
        encoder = AutoModel.from_pretrained(folder, dtype=torch.float32).float().eval()

        class LastHidden(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
                return self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

        model, outputs = LastHidden().eval(), ["last_hidden_state"]
        encoder_takes = inspect.signature(encoder.forward).parameters
        example = tokenizer(["Eric Boyd led the effort.", "Who?"], return_tensors="pt", padding=True)
        example = {n: v for n, v in example.items() if n != "token_type_ids" or n in encoder_takes}
    # Inputs by name, and only those both the tokenizer makes and the model takes: DistilBERT, for one, has
    # no token_type_ids (its third positional parameter is something else).
    takes = inspect.signature(model.forward).parameters
    names = [n for n in takes if n in example and n in ("input_ids", "attention_mask", "token_type_ids")]
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        # The tracer warns about shape-dependent branches in transformers' attention code; for these models
        # they resolve the same for every input shape (the tests compare outputs at many lengths).
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (), str(partial), kwargs={n: example[n] for n in names}, input_names=names,
                              output_names=outputs, opset_version=17, dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, *outputs]})
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    if in_cache:
        try:
            for stale in record_export(kind, folder, target):
                log.info("removed the stale export %s", stale)
        except OSError as err:  # pruning is housekeeping: the export itself was written and will be used
            log.warning("could not tidy the export cache %s (%s)", target.parent, err)
    return target


def prepare_fast_start(settings: Settings) -> list[str]:
    """Make the fp32 ONNX exports of the configured embedder and reader that the cache lacks; one line per
    export made. An export that fails is logged and skipped: the models then run through torch."""
    from rag.store.embedding import onnx_compatible, resolve_embedding_model

    wanted = []
    if settings.embedding_backend == "auto":
        folder = resolve_embedding_model(settings.embedding_model)
        if Path(folder).is_dir() and onnx_compatible(folder):
            wanted.append(("embedder", folder))
    if settings.reader_backend == "auto":
        folder = resolve_reader_model(settings.reader_model)
        if Path(folder).is_dir():
            wanted.append(("reader", folder))
    done = []
    for kind, folder in wanted:
        if cached_export(kind, folder) is not None:
            continue
        started = time.time()
        try:
            path = export_fp32(kind, folder)
        except Exception as err:  # noqa: BLE001 - an optional speed-up must never fail indexing
            log.warning("could not export the %s to ONNX (%s: %s); it will run through torch", kind,
                        type(err).__name__, err)
            continue
        done.append(f"exported the {kind} to ONNX for fast start in {time.time() - started:.1f} s -> {path}")
    return done
