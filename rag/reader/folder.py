"""A reader's folder: where the packaged one is, its metadata file (threshold, calibration, training record)
and its torch weights, loaded with the QA head checked."""
from __future__ import annotations

import json
from pathlib import Path

from rag.config import PACKAGED_READER, PACKAGED_READER_DIR
from rag.errors import RagError

META_FILE = "reader_meta.json"
#: The int8 ONNX export of the reader, beside its safetensors (written by `rag export-reader`).
ONNX_FILE = "reader-int8.onnx"


class ReaderError(RagError):
    """The reader model cannot be loaded; the message is meant for the user."""


def resolve_reader_model(name: str) -> str:
    """The packaged reader's folder for its name; anything else (a folder or a hub name) as given."""
    if name == PACKAGED_READER:
        if not (PACKAGED_READER_DIR / "config.json").is_file():
            raise ReaderError(f"the packaged reader is missing from {PACKAGED_READER_DIR}; reinstall the package")
        return str(PACKAGED_READER_DIR)
    return name


def load_reader_meta(model: str | Path) -> dict:
    """The reader's metadata (threshold, calibration, training record), empty if it has none."""
    path = Path(model) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ReaderError(f"the reader's {META_FILE} in {model} cannot be read ({err})") from None
    if not isinstance(meta, dict):
        raise ReaderError(f"the reader's {META_FILE} in {model} is not a JSON object")
    return meta


def write_reader_meta(model_dir: str | Path, meta: dict) -> None:
    """Write the reader's metadata whole (written beside it, then renamed over it)."""
    path = Path(model_dir) / META_FILE
    tmp = path.with_name(META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    tmp.replace(path)


def load_qa_model(path: str | Path, name: str):
    """The torch QA model in `path`, fp32, in eval mode; a folder whose weights lack the QA head (a plain
    encoder, which transformers would give a randomly initialised head that answers nonsense) is refused."""
    import torch
    from transformers import AutoModelForQuestionAnswering
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a local model: no "Loading weights" bar in the user's output
    model, info = AutoModelForQuestionAnswering.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ReaderError(
            f"the reader model {name!r} has no trained question-answering head (its weights lack "
            f"{', '.join(missing[:2])}{' …' if len(missing) > 2 else ''}): it would answer at random; give a model "
            "fine-tuned for extractive QA (SQuAD-style), or train one with `rag train-reader`")
    return model.float().eval()


def check_export_is_current(folder: Path) -> None:
    """Refuse an ONNX export made from other weights than the folder's (retrained since the export)."""
    import hashlib

    recorded = load_reader_meta(folder).get("onnx", {}).get("exported_from_sha256")
    weights = folder / "model.safetensors"
    if recorded and weights.is_file() and hashlib.sha256(weights.read_bytes()).hexdigest() != recorded:
        raise ReaderError(f"the ONNX export in {folder} was made from other weights; run `rag export-reader` again")
