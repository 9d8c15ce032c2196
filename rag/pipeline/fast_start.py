"""Fast start (run by `rag index`): the embedder and the reader exported to fp32 ONNX, cached where
rag.runtime.onnx finds them, so later processes answer without importing torch."""
from __future__ import annotations

import inspect
import logging
import os
import time
import warnings
from pathlib import Path

from rag.config import Settings
from rag.reader.folder import load_qa_model, resolve_reader_model
from rag.runtime.onnx import cached_export, export_path, record_export

log = logging.getLogger(__name__)


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
