"""The server's processes for `rag serve --workers N`: the index checked and the models measured in a child
that then exits (so the supervising parent holds no model), and N uvicorn workers on one socket."""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from rag.config import Settings


def prepare_elsewhere(no_rebuild: bool, settings: Settings, verbose: bool = False, configure=None) -> None:
    """For --workers N: check and index the documents and measure the runtime (cached for the workers) in a
    child process that then exits, so the parent that only supervises the workers holds no model (it kept
    ~800 MB when it loaded them itself); its failure is this command's one-line error. A SIGTERM or Ctrl-C
    to the parent ends the child too, so no orphan goes on indexing. `configure(verbose, command)` sets up the
    child's logging as the command's (rag.cli.common.configure_logging)."""
    import multiprocessing
    import signal

    from rag.errors import RagError

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing loaded is left behind
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_prepare_child, args=(no_rebuild, settings, send, verbose, configure), name="rag-prepare")
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        child.start()
        send.close()
        try:
            failure = receive.recv()
        except EOFError:  # killed (out of memory, a signal) before it could say
            child.join()
            failure = f"the process checking the index and models ended unexpectedly (exit code {child.exitcode})"
        child.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.is_alive():
            child.terminate()
            child.join()
    if failure:
        raise RagError(failure)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _prepare_child(no_rebuild: bool, settings: Settings, send, verbose: bool = False, configure=None) -> None:
    """The child of prepare_elsewhere: load the pipeline as a one-worker server would, then report. It logs
    as the command does (-v included); a failure that is a bug keeps its traceback on stderr."""
    from rag.console import safe_output
    from rag.errors import user_message

    if configure is not None:
        configure(verbose, "serve")
    with safe_output():
        try:
            from rag.pipeline.qa import Pipeline

            Pipeline.from_settings(settings, rebuild=not no_rebuild).close()
            message = None
        except KeyboardInterrupt:
            message = "interrupted"
        except Exception as err:  # noqa: BLE001 - reported by the parent as the command's error
            message = user_message(err)
            if message is None or verbose:
                logging.getLogger("rag.service.server").exception("preparing the index and models failed")
            message = message or f"could not load the index and models ({type(err).__name__}: {err})"
        with contextlib.suppress(OSError):  # the parent is gone: nobody is left to tell
            send.send(message)


def serve_workers(host: str, port: int, settings: Settings, options: dict, workers: int) -> int:
    """`rag serve --workers N`: N uvicorn worker processes on one socket, each building the app from the
    settings handed over in $RAG_SERVE; their metrics meet in a temporary folder (Prometheus multiprocess)."""
    import dataclasses
    import json
    import shutil
    import tempfile

    import uvicorn

    from rag.service.server import SERVE_ENV, uvicorn_limits

    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    os.environ[SERVE_ENV] = json.dumps({"settings": values, **options})
    metrics_dir = tempfile.mkdtemp(prefix="rag-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("rag.service.server:served_app", factory=True, workers=workers, host=host, port=port,
                    log_level="warning", access_log=False, **uvicorn_limits())
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
