"""Command line: `rag index | show | search | ask | serve | eval | bench | train-reader | calibrate-reader |
lineage | export-reader`.

parser: the arguments (and which Settings and TrainConfig fields the flags set); query: the commands that
index and answer; offline: evaluation, benchmarks and the reader's training; common: what they share.
Every command imports what it needs inside its function, so `rag --help` and a one-shot `rag ask` never
import torch."""
from __future__ import annotations

import sys

from rag.cli.common import UsageError, configure_logging
from rag.cli.parser import build_parser
from rag.cli.query import format_answer

__all__ = ["UsageError", "build_parser", "configure_logging", "format_answer", "main"]


def main(argv: list[str] | None = None) -> int:
    from rag.console import safe_output

    with safe_output():  # nothing printed below can steer the terminal (JSON keeps its meaning)
        return _main(argv)


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
