"""Where the models run without torch: ONNX Runtime sessions, the cache of fp32 ONNX exports they load,
and the tokenizers-only windowing the reader reads.

A one-shot `rag ask` spends most of its time importing torch, transformers and sentence-transformers
(~6 s here). `rag index` exports the embedder and the reader once, in fp32 (same
weights, same numbers up to float rounding), into a cache keyed by the weights file; every later process
loads those through ONNX Runtime and the `tokenizers` library alone.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from rag.errors import RagError


class ModelRuntimeError(RagError):
    """An ONNX model or a tokenizer cannot be loaded; the message is meant for the user."""


#: CPU flags (as /proc/cpuinfo names them) of int8 dot-product instructions: with one, ONNX Runtime's int8
#: matrix products are exact over the full int8 range and several times faster than AVX2's.
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: CPU flags of a native bfloat16 dot product: where bf16 autocast is faster than fp32.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (from /proc/cpuinfo, read once; empty where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1] for line in lines if line.startswith("flags")), "").split())


def has_int8_dot_product() -> bool:
    """Whether this CPU has VNNI or AMX (else int8 weights need the reduced range to avoid overflow)."""
    return bool(cpu_flags() & set(INT8_DOT_PRODUCT_FLAGS))


def length_bucket_for(runtime: str) -> int:
    """The window-length bucket a runtime reads best with (scripts/bucket_sizes.py; README "Runtime per CPU"):
    on the CPUs measured, torch costs the same for every length it meets, so padding is pure cost (1: none),
    and ONNX Runtime was fastest at 16. bf16 on AMX builds a kernel per shape, so it buckets to 32 (the
    reason for bucketing; not measured on such a CPU here)."""
    if runtime.startswith("onnxruntime"):
        return 16
    return 32 if runtime == "torch bf16" and "amx_bf16" in cpu_flags() else 1


def has_bf16_dot_product() -> bool:
    """Whether this CPU computes bfloat16 products natively (AMX or AVX512-BF16)."""
    return bool(cpu_flags() & set(BF16_FLAGS))


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


def load_tokenizer(folder: str | Path):
    """The fast tokenizer of a model folder (`tokenizer.json`) through the `tokenizers` library, with
    no truncation or padding of its own."""
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception
        raise ModelRuntimeError(f"cannot load the tokenizer {path}: {err}") from None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def pad_id(folder: str | Path, tokenizer) -> int:
    """The padding token's id, as the model's tokenizer_config.json names it ([PAD] by default)."""
    name = "[PAD]"
    config = Path(folder) / "tokenizer_config.json"
    if config.is_file():
        pad = json.loads(config.read_text(encoding="utf-8")).get("pad_token")
        name = pad.get("content", name) if isinstance(pad, dict) else (pad or name)
    token = tokenizer.token_to_id(name)
    return 0 if token is None else int(token)


def pad_batch(encodings: list, pad: int) -> dict[str, np.ndarray]:
    """`tokenizers` encodings as int64 arrays padded to the longest: input_ids (padded with `pad`),
    token_type_ids and attention_mask (padded with 0)."""
    width = max(len(e.ids) for e in encodings)
    batch = {"input_ids": np.full((len(encodings), width), pad, dtype=np.int64),
             "token_type_ids": np.zeros((len(encodings), width), dtype=np.int64),
             "attention_mask": np.zeros((len(encodings), width), dtype=np.int64)}
    for i, e in enumerate(encodings):
        k = len(e.ids)
        batch["input_ids"][i, :k], batch["token_type_ids"][i, :k], batch["attention_mask"][i, :k] = \
            e.ids, e.type_ids, e.attention_mask
    return batch


class Windows:
    """(question, context) pairs cut into overlapping windows, padded to the longest: the arrays a
    transformers fast tokenizer returns for `return_overflowing_tokens=True, return_offsets_mapping=True,
    padding="longest"`, with the same order (each pair's windows in turn) and the same values."""

    def __init__(self, encodings: list, pairs: list[int], pad: int) -> None:
        self.data = pad_batch(encodings, pad)
        n, width = self.data["input_ids"].shape
        self._sequence_ids = [e.sequence_ids + [None] * (width - len(e.ids)) for e in encodings]
        self.data["offset_mapping"] = np.zeros((n, width, 2), dtype=np.int64)
        for i, e in enumerate(encodings):
            self.data["offset_mapping"][i, : len(e.ids)] = e.offsets
        self.data["overflow_to_sample_mapping"] = np.asarray(pairs, dtype=np.int64)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def sequence_ids(self, window: int) -> list[int | None]:
        """0 for question tokens, 1 for context tokens, None for special and padding tokens."""
        return self._sequence_ids[window]


class PairTokenizer:
    """Question/context windowing with `tokenizers` alone (no transformers import): truncation of the
    context only, `stride` tokens of overlap, offsets into the context."""

    def __init__(self, tokenizer, pad: int, max_length: int, stride: int) -> None:
        from tokenizers import Tokenizer

        self._plain = tokenizer
        self._windows = Tokenizer.from_str(tokenizer.to_str())
        self._windows.enable_truncation(max_length, stride=stride, strategy="only_second")
        self.pad = pad

    @classmethod
    def from_folder(cls, folder: str | Path, max_length: int, stride: int) -> PairTokenizer:
        tokenizer = load_tokenizer(folder)
        return cls(tokenizer, pad_id(folder, tokenizer), max_length, stride)

    def count(self, text: str) -> int:
        """Tokens of `text` alone, no special tokens."""
        return len(self._plain.encode(text.strip(), add_special_tokens=False).ids)

    def windows(self, questions: list[str], contexts: list[str]) -> Windows:
        encodings, pairs = [], []
        for i, e in enumerate(self._windows.encode_batch([(q.strip(), c) for q, c in zip(questions, contexts)])):
            for w in (e, *e.overflowing):
                encodings.append(w)
                pairs.append(i)
        return Windows(encodings, pairs, self.pad)
