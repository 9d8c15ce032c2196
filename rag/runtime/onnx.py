"""Where the models run without torch: ONNX Runtime sessions and the cache of fp32 ONNX exports they load.

A one-shot `rag ask` spends most of its time importing torch, transformers and sentence-transformers.
`rag index` exports the embedder and the reader once, in fp32 (same weights, same numbers up to float
rounding), into a cache keyed by the weights file; every later process loads those through ONNX Runtime
and the `tokenizers` library alone (rag.runtime.windows)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from rag.errors import RagError


class ModelRuntimeError(RagError):
    """An ONNX model or a tokenizer cannot be loaded; the message is meant for the user."""


def cache_dir() -> Path:
    """Where exports are kept: $RAG_CACHE, else $XDG_CACHE_HOME/rag, else ~/.cache/rag."""
    if os.environ.get("RAG_CACHE"):
        return Path(os.environ["RAG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


def weights_file(folder: str | Path) -> Path:
    """The weights file of a model folder (safetensors, else a torch .bin)."""
    folder = Path(folder)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise ModelRuntimeError(f"no model weights (model.safetensors) in {folder}")


def fingerprint(folder: str | Path) -> str:
    """A key for a model's weights that costs no read: the weights file's resolved path, inode, size,
    modification and change times (a re-trained or replaced model gets a new key, and so a new export, even
    when a copy tool such as `cp -p` or `rsync -a` restores the old modification time: none can restore the
    change time)."""
    path = weights_file(folder).resolve()
    st = path.stat()
    key = f"{path}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def export_path(kind: str, folder: str | Path) -> Path:
    """Where the fp32 ONNX export of model `folder` (kind "embedder" or "reader") is cached."""
    return cache_dir() / "onnx" / f"{kind}-{fingerprint(folder)}.onnx"


def record_export(kind: str, folder: str | Path, path: Path) -> list[Path]:
    """Note beside the cached export `path` which weights file (on which host) it came from, then remove
    the cache's other exports of `kind` made here from that same file (since retrained or replaced) or from
    a file that is gone, and cut-off exports over a day old: a retrained reader would otherwise leave ~90 MB
    behind each time. If the weights changed while this export was made, it is the stale one and goes.
    Returns the files removed. Exports of other checkouts (or hosts sharing the cache) are kept, and so are
    exports made before these notes existed."""
    import socket
    import time

    source, host = weights_file(folder).resolve(), socket.gethostname()
    if export_path(kind, folder) != path:  # retrained meanwhile: what was just written is already stale
        path.unlink(missing_ok=True)
        return [path]
    path.with_suffix(".json").write_text(json.dumps({"kind": kind, "source": str(source), "host": host}),
                                         encoding="utf-8")
    removed = []
    for note in path.parent.glob(f"{kind}-*.json"):
        if note.stem == path.stem:
            continue
        try:
            recorded = json.loads(note.read_text(encoding="utf-8"))
            other = Path(recorded["source"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if recorded.get("host") == host and (other == source or not other.exists()):
            for stale in (note.with_suffix(".onnx"), note):
                stale.unlink(missing_ok=True)
                removed.append(stale)
    for partial in path.parent.glob(f"{kind}-*.tmp"):
        if time.time() - partial.stat().st_mtime > 86400:
            partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed


def cached_export(kind: str, folder: str | Path) -> Path | None:
    """The cached export of `folder`, if one was made."""
    try:
        path = export_path(kind, folder)
    except (OSError, ModelRuntimeError):
        return None
    return path if path.is_file() else None


def onnx_session(path: Path, threads: int = 0):
    """An ONNX Runtime session on the CPU with all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own unrelated exception types
        raise ModelRuntimeError(f"cannot load the ONNX model {path}: {err}") from None


def model_inputs(model) -> frozenset[str]:
    """The input names a model takes: an ONNX Runtime session's declared inputs, or a torch module's
    forward parameters. A DistilBERT model, for one, takes no token_type_ids."""
    import inspect

    if hasattr(model, "get_inputs"):
        return frozenset(i.name for i in model.get_inputs())
    return frozenset(inspect.signature(model.forward).parameters)
