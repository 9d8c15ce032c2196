"""Flags that several commands share, and how a flag is tied to the Settings or TrainConfig field it sets
(`setting`, `train_field`): the parsed arguments carry those maps (rag.cli.common.SETTINGS, TRAIN_CONFIG), and
tests/cli/ checks that every field they name exists, so renaming a flag or a field cannot silently stop it
from setting anything."""
from __future__ import annotations

import argparse
from pathlib import Path

from rag.cli.common import SETTINGS, TRAIN_CONFIG
from rag.config import READER_BACKENDS as BACKENDS
from rag.config import RETRIEVAL_MODES, Settings

Parser = argparse.ArgumentParser


def mapped_flag(p: Parser, attribute: str, field: str | None, *flags: str, **kwargs) -> None:
    """Add a flag to `p` and record, in its parsed arguments' map `attribute`, the field it sets (by
    default the field named like the flag's dest)."""
    action = p.add_argument(*flags, **kwargs)
    p.set_defaults(**{attribute: {**(p.get_default(attribute) or {}), action.dest: field or action.dest}})


def setting(p: Parser, field: str, *flags: str, **kwargs) -> None:
    """A flag that, when given, overrides the Settings field `field` (rag.cli.common.settings_from)."""
    mapped_flag(p, SETTINGS, field, *flags, **kwargs)


def train_field(p: Parser, *flags: str, **kwargs) -> None:
    """A flag of `rag train-reader` that, when given, sets the TrainConfig field named like its dest."""
    mapped_flag(p, TRAIN_CONFIG, None, *flags, **kwargs)


def top_k(value: str) -> int:
    k = int(value)
    if not 1 <= k <= Settings.max_top_k:
        raise argparse.ArgumentTypeError(f"must be between 1 and {Settings.max_top_k}")
    return k


def share(value: str) -> float:
    share = float(value)
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return share


def workers(value: str) -> int:
    n = int(value)
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return n


def seconds(value: str) -> float:
    seconds = float(value)
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError("must be a number of seconds above 0 and at most 3600")
    return seconds


def positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return port



def corpus_args(p: Parser) -> None:
    setting(p, "docs_dir", "--docs", type=Path, help="corpus folder (default: seeds/)")
    setting(p, "index_dir", "--index", type=Path, help="index folder (default: index/)")
    setting(p, "store", "--store", metavar="DSN",
             help="keep the index in PostgreSQL + pgvector instead of --index (postgresql://user@host/db;"
                  " default: $RAG_STORE)")
    setting(p, "follow_links", "--follow-links", action="store_true", default=None,
             help="also index files that symbolic links inside the corpus folder point to outside it")
    setting(p, "ocr", "--no-ocr", action="store_false", default=None,
             help="do not read image-only PDF pages and image files by OCR (on by default when the ocr extra is installed)")


def reader_args(p: Parser) -> None:
    setting(p, "widen_to_words", "--no-word-widening", action="store_false", default=None,
             help="keep answers exactly as the reader's tokens end, even when they cut a word")
    setting(p, "reader_model", "--reader", help="reader model folder or hub name (default: the packaged reader)")
    setting(p, "reader_backend", "--reader-backend", choices=BACKENDS,
             help="auto: in `rag serve`, the runtime measured fastest on this CPU (once per machine, cached); elsewhere"
                  " the fp32 ONNX export made by `rag index` (fast start), else torch; torch: torch fp32; torch-bf16:"
                  " torch with bf16 autocast (fast on CPUs with AMX or AVX512-BF16); onnx-fp32: the fp32 export;"
                  f" onnx: the int8 export, opt-in (default {Settings.reader_backend})")


def no_rebuild_arg(p: Parser) -> None:
    p.add_argument("--no-rebuild", action="store_true", help="fail instead of rebuilding a missing or stale index")


def query_args(p: Parser) -> None:
    corpus_args(p)
    setting(p, "top_k", "--top-k", type=top_k, help=f"passages to retrieve (1-{Settings.max_top_k}, default {Settings.top_k})")
    setting(p, "retrieval_mode", "--mode", choices=RETRIEVAL_MODES, help=f"retrieval mode (default {Settings.retrieval_mode})")
    reader_args(p)
    no_rebuild_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")


