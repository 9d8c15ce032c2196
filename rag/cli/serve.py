"""`rag serve`: the checks made before minutes of loading (the port, serving beyond this machine without
keys), then one server process, or N workers (rag.service.processes)."""
from __future__ import annotations

import argparse
import logging
import os

from rag.cli.common import UsageError, configure_logging, settings_from
from rag.cli.query import check_watch_flags, open_pipeline
from rag.config import Settings


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rag.service.processes import prepare_elsewhere, serve_workers
    from rag.service.server import allowed_hosts_for, create_app, default_workers, is_loopback, uvicorn_limits

    settings = settings_from(args).with_overrides(measure_runtime=True)  # a server lives long: pick the fastest runtime
    check_watch_flags(args, settings)
    _check_port(args.host, args.port)  # before minutes of loading, not after
    _check_exposure(args.host, settings, args.insecure_no_auth)
    from rag.console import SafeFormatter

    logging.getLogger().handlers[0].setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    workers = args.workers or default_workers()
    if workers > 1 and not settings.torch_threads:  # the cores shared out: each worker runs its models on its own
        settings = settings.with_overrides(torch_threads=max(1, (os.cpu_count() or 1) // workers))
    if workers > 1:
        prepare_elsewhere(args.no_rebuild, settings, args.verbose, configure=configure_logging)
    else:
        pipeline = open_pipeline(args, settings)  # load here, so a missing index or model fails with a clear message
    options = dict(allowed_hosts=allowed_hosts_for(args.host, args.allowed_hosts),
                   public=["/metrics"] if args.metrics_public else None, writable_default=args.writable_default,
                   watch=args.watch,
                   keys_required=not is_loopback(args.host) and not args.insecure_no_auth)
    logging.getLogger("rag.service.server").info("listening on http://%s:%d (POST /ask, GET /health, /docs; %d worker%s)",
                                         args.host, args.port, workers, "" if workers == 1 else "s")
    if workers == 1:
        try:
            uvicorn.run(create_app(settings, pipeline=pipeline, **options), host=args.host, port=args.port,
                        log_level="warning", access_log=False, **uvicorn_limits())
        finally:
            pipeline.close()
        return 0
    return serve_workers(args.host, args.port, settings, options, workers)


def _check_exposure(host: str, settings: Settings, insecure: bool) -> None:
    """Refuse to serve beyond this machine with no API key (anyone who reaches it could read and change the
    documents), unless --insecure-no-auth says that is meant."""
    from rag.service.keys import KeyStore
    from rag.service.server import is_loopback

    if not is_loopback(host) and not insecure and not KeyStore(settings.data_dir).any():
        raise UsageError(f"refusing to serve {host} without API keys: add one with `rag keys add NAME --scope write "
                         f"--data {settings.data_dir}`, or pass --insecure-no-auth")


def _check_port(host: str, port: int) -> None:
    """Fail at once, in one line, when the address cannot be bound (in use, or not this machine's)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as err:
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
