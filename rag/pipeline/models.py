"""Who owns the models: one embedder and one reader per process for the same settings, and the lock every
user of them takes turns by (pipelines of every collection, indexing): the fast tokenizers are not for two
threads at once, and on a small CPU two forward passes at once are no faster than one after the other."""
from __future__ import annotations

import collections
import threading
import time

from rag.config import Settings
from rag.reader.model import Reader, reader_key
from rag.store.embedding import Embedder


class FairLock:
    """The models' lock, handed over in the order it was asked for. A threading.Lock lets the thread that
    releases it take it again at once, so an upload embedding turn after turn could keep a question waiting
    for several turns; here a question asking during a turn gets the next one."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiting: collections.deque[threading.Lock] = collections.deque()
        self._held = False

    def acquire(self) -> bool:
        with self._guard:
            if not self._held:
                self._held = True
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        turn.acquire()  # released by the holder's release(): the lock is this thread's from then on
        return True

    def release(self) -> None:
        with self._guard:
            if self._waiting:
                self._waiting.popleft().release()  # handed over: it stays held
            else:
                self._held = False

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_SHARED: dict[tuple, Embedder | Reader] = {}
_SHARED_LOCK = FairLock()  # the models below are shared, so the pipelines using them take turns


def shared_models(settings: Settings) -> tuple[Embedder, Reader]:
    """The embedder and reader these settings describe, loaded once per process and shared by every pipeline
    the Python API makes (from_folder, from_documents): a second pipeline costs no second model."""
    e_key = ("embedder", settings.embedding_model, settings.embedding_batch_size, settings.embedding_backend,
             settings.torch_threads)
    r_key = ("reader", *reader_key(settings))
    with _SHARED_LOCK:
        if e_key not in _SHARED:
            _SHARED[e_key] = Embedder.from_settings(settings)
        if r_key not in _SHARED:
            _SHARED[r_key] = Reader.from_settings(settings)
    return _SHARED[e_key], _SHARED[r_key]


class LockedEmbedder:
    """The shared embedder, used under the models' lock: an upload's indexing embeds between questions, in
    turns of about `turn_seconds` (the batch sized from how fast the last one went), so a question waits
    for one turn of an upload, never for the whole file, whatever the CPU."""

    FIRST, MOST = 8, 256  # passages in the first turn, and in any

    def __init__(self, embedder, lock, turn_seconds: float = Settings.indexing_turn_seconds) -> None:
        self._embedder, self._lock, self.turn_seconds = embedder, lock, turn_seconds

    def run(self, texts, progress: bool = False):
        import numpy as np

        if not texts:
            with self._lock:
                return self._embedder.run(texts, progress=False)
        parts, done, size = [], 0, self.FIRST
        while done < len(texts):
            with self._lock:
                started = time.perf_counter()
                parts.append(self._embedder.run(texts[done : done + size], progress=False))
                took = time.perf_counter() - started
            done += size
            fits = int(size * self.turn_seconds / max(took, 1e-3))
            size = max(1, min(self.MOST, 2 * size, fits))  # never more than doubled at once
        return np.vstack(parts)

    def __getattr__(self, name: str):
        return getattr(self._embedder, name)
