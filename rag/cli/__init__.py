"""Command line: `rag index | show | search | ask | serve | eval | bench | train-reader | calibrate-reader |
lineage | export-reader`.

parser: the arguments (and which Settings and TrainConfig fields the flags set); query: the commands that
index and answer; offline: evaluation, benchmarks and the reader's training; common: what they share.
Every command imports what it needs inside its function, so `rag --help` and a one-shot `rag ask` never
import torch."""
from __future__ import annotations

import logging
import sys

from rag.cli.common import UsageError
from rag.cli.parser import build_parser
from rag.cli.query import format_answer

__all__ = ["UsageError", "build_parser", "format_answer", "main"]


def _quiet_model_loading() -> None:
    """No weight-loading progress bars or load reports: the models are local and known. Through the
    environment, which transformers reads when (and only if) it is imported: importing it here would cost
    a one-shot `rag ask` most of a second."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    from rag.console import safe_output

    with safe_output():  # nothing printed below can steer the terminal (JSON keeps its meaning)
        return _main(argv)


def configure_logging(verbose: bool, command: str) -> None:
    """The command's logging: warnings (everything with -v), escaped, the libraries' chatter quiet, and the
    long commands' progress (rag's INFO). Also what `rag serve --workers`' preparing child process runs."""
    from rag.console import SafeFormatter

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(SafeFormatter("%(levelname)s: %(message)s"))
    _quiet_model_loading()
    for noisy in ("httpx", "sentence_transformers", "bm25s", "transformers", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
    if command in ("train-reader", "calibrate-reader", "serve"):
        logging.getLogger("rag").setLevel(logging.INFO)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.command)
    try:
        return args.func(args)
    except UsageError as err:
        parser.error(str(err))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)  # on a line of its own, whatever was being printed
        return 130
    except Exception as err:  # noqa: BLE001 - every known failure carries a message for the user
        from rag.errors import user_message

        message = user_message(err)
        if message is None or args.verbose:
            raise
        print(f"rag: error: {message}", file=sys.stderr)
        return 1
    return 0
