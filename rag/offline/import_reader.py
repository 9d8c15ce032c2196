"""Any extractive reader as a rag reader (`rag calibrate-reader --model HUB_ID_OR_DIR --output DIR`): the
model (a folder, or a Hugging Face hub id fetched into the hub cache) is written to DIR with its fast
tokenizer and a reader_meta.json, then calibrated on the SQuAD 2.0 dev articles shipped in the package, so
`--reader DIR` serves it with the same windows, exact offsets, abstention and citations. BERT and ELECTRA
word pieces, RoBERTa's byte-level BPE (offsets that take in the space before a word) and DistilBERT (no
token_type_ids) are handled by the reader itself (rag.reader.model, rag.runtime.onnx.model_inputs)."""
from __future__ import annotations

import shutil
from pathlib import Path

from rag.config import PACKAGE_DIR
from rag.errors import RagError
from rag.reader.folder import ReaderError, load_qa_model, write_reader_meta

#: SQuAD 2.0's dev articles of this project (1,103 questions, CC BY-SA 4.0), shipped for calibration.
SHIPPED_CALIBRATION = PACKAGE_DIR / "models" / "calibration" / "squad2-dev.json"


class ReaderImportError(RagError):
    """A model cannot be made into a reader folder as asked."""


def model_folder(model: str) -> Path:
    """The model's folder: as given, or a hub id's snapshot (one line when it cannot be fetched)."""
    if Path(model).is_dir():
        return Path(model)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model))
    except Exception as err:  # noqa: BLE001 - the hub client raises many unrelated types
        raise ReaderImportError(f"{model!r} is not a folder and cannot be downloaded from the Hugging Face hub "
                           f"({type(err).__name__}); on a machine without internet, copy the model folder here "
                           "and give its path") from None


def import_reader(model: str, output: Path, calibrate) -> dict:
    """Write the QA model `model` to `output` as a reader folder (fp32 safetensors, tokenizer.json,
    reader_meta.json), calibrated by `calibrate(folder) -> meta` before it is renamed into place: a failed
    run leaves no half-made reader, and an existing non-empty `output` is refused (never replaced)."""
    from transformers import AutoTokenizer

    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ReaderImportError(f"{output} already exists and is not empty; give a new folder")
    source = model_folder(model)
    qa = load_qa_model(source, model)  # refuses a model without a trained QA head
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ReaderError(f"cannot load the tokenizer of {model!r}: {err}") from None
    if not tokenizer.is_fast:
        raise ReaderImportError(f"{model!r} has no fast tokenizer (tokenizer.json): rag needs its character offsets")
    building = output.with_name(f".{output.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        qa.save_pretrained(building)
        tokenizer.save_pretrained(building)
        meta = {
            "description": f"Extractive QA reader imported from {model} ({qa.config.model_type}); rag's windows, "
                           "offsets and calibration",
            "source_model": model,
            "architecture": qa.config.model_type,
            "max_position_embeddings": getattr(qa.config, "max_position_embeddings", None),
            "licence": f"that of {model}; calibrated on SQuAD 2.0 dev articles (CC BY-SA 4.0)",
        }
        write_reader_meta(building, meta)
        meta = calibrate(building)
        meta["calibrate_command"] = f"rag calibrate-reader --model {model} --output {output}"
        write_reader_meta(building, meta)
        if output.exists():
            output.rmdir()  # empty, checked above
        building.rename(output)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return meta
