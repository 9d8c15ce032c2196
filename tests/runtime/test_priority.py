"""Indexing at a lower priority: the thread runs nicer by the niceness asked, its result and its
exceptions come back to the caller, and the caller's own priority is untouched."""
import os
import threading

import pytest

from rag.runtime.priority import lowered


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread priority is Linux's")
def test_the_work_runs_nicer_and_the_caller_stays_as_it_was():
    before = _niceness()
    inside = lowered(5, _niceness)
    assert inside == min(before + 5, 19)
    assert _niceness() == before
    assert lowered(0, _niceness) == before  # 0: in the caller's thread, as it is


def test_an_exception_of_the_work_is_raised_in_the_caller():
    def fails():
        raise ValueError("broken file")

    with pytest.raises(ValueError, match="broken file"):
        lowered(5, fails)


def test_the_work_holds_what_the_caller_holds_and_other_threads_still_wait(tmp_path):
    """An upload's build runs lowered while its caller holds the index folder's lock: the build re-enters
    it (before, it waited for its own caller for ever), and another thread still waits for both."""
    import time

    from rag.store.files.folder import index_lock

    order = []

    def other():
        with index_lock(tmp_path / "index"):
            order.append("other")

    with index_lock(tmp_path / "index"):
        waiting = threading.Thread(target=other)
        waiting.start()

        def build():
            with index_lock(tmp_path / "index"):
                time.sleep(0.2)
                order.append("build")

        lowered(5, build)
        order.append("caller")
    waiting.join(10)
    assert order == ["build", "caller", "other"]
