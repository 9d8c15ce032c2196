"""What the tests share that is not a fixture: the repository's folders, `rag` run as a user runs it, a real
server in a thread. The modules beside this one hold the rest (a `rag serve` child process, documents and
scans made in the test, the local PostgreSQL server, small SQuAD files, the seed questions)."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "seeds"


@contextlib.contextmanager
def serving(app):
    """A real uvicorn server for `app` on a free port, in a thread of the test process (sharing its loaded
    models); its base URL, until the block ends."""
    import threading
    import time

    import uvicorn

    from rag.offline.bench import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def cli(*args, cwd=REPO, stdin=None, timeout=300) -> subprocess.CompletedProcess:
    """`rag ARGS` in a child process (as a user runs it), text output captured."""
    return subprocess.run([sys.executable, "-m", "rag.cli", *map(str, args)], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=timeout)
