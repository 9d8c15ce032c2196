"""Collections in one process and across workers: an upload's embedding shares the models in turns that
questions get in the order they asked."""
import threading
import time

from rag.collections import LockedEmbedder
from rag.pipeline import FairLock


def test_an_uploads_embedding_holds_the_models_for_one_turn_at_a_time():
    """However slow the CPU, the models' lock is held for about one turn, so a question waits for one turn."""
    import numpy as np

    class Slow:
        def run(self, texts, progress=False):
            time.sleep(0.02 * len(texts))  # 20 ms a passage
            return np.zeros((len(texts), 4), dtype=np.float32)

    holds = []

    class TimedLock:
        def __init__(self):
            self._lock = threading.Lock()

        def __enter__(self):
            self._lock.acquire()
            self._since = time.perf_counter()

        def __exit__(self, *exc):
            holds.append(time.perf_counter() - self._since)
            self._lock.release()

    vectors = LockedEmbedder(Slow(), TimedLock(), turn_seconds=0.3).run(["x"] * 200)
    assert vectors.shape == (200, 4)
    assert max(holds) < 0.3 * 2.5, holds  # one turn (a batch can only double: growth is bounded too)
    assert len(holds) < 40, f"{len(holds)} turns: the batches did not grow to fill a turn"


def test_the_models_lock_goes_to_whoever_asked_first():
    """A question waiting while an upload holds the models gets them next, even though the upload asks again
    at once (a threading.Lock often lets the releasing thread take it straight back)."""
    lock, order = FairLock(), []
    lock.acquire()  # the upload's turn
    question = threading.Thread(target=lambda: (lock.acquire(), order.append("question"), lock.release()))
    question.start()
    while not lock._waiting:
        time.sleep(0.001)
    lock.release()
    with lock:  # the upload's next turn: after the question's
        order.append("upload")
    question.join()
    assert order == ["question", "upload"]
