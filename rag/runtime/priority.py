"""Work at a lower scheduling priority: the server's indexing gives way to the threads answering questions."""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading


def lowered(niceness: int, work, *args, **kwargs):
    """`work(*args, **kwargs)` in a thread of its own whose niceness is raised by `niceness` (Linux schedules
    each thread by its own), its result returned or its exception raised here; the caller waits. The thread
    runs in a copy of the caller's context, so that what the caller holds it holds (an index folder's lock:
    rag.store.files.folder.index_lock). A new thread each time, since an unprivileged thread cannot raise its
    priority back; threads it starts inherit its niceness. Where the platform does not allow it, the work
    runs at full priority."""
    if niceness <= 0:
        return work(*args, **kwargs)
    outcome: dict = {}

    def run() -> None:
        try:
            with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed
                me = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, me, os.getpriority(os.PRIO_PROCESS, me) + niceness)
            outcome["result"] = work(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), name="rag-indexing", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")
