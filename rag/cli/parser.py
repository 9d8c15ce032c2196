"""The command line's arguments: one small function per command (the offline ones in rag.cli.offline_args),
with the flags several commands share from rag.cli.flags."""
from __future__ import annotations

import argparse
from pathlib import Path

from rag.cli.flags import (
    Parser,
    corpus_args,
    no_rebuild_arg,
    port,
    positive,
    query_args,
    reader_args,
    seconds,
    setting,
    workers,
)
from rag.cli.offline_args import OFFLINE_COMMANDS
from rag.cli.query import cmd_ask, cmd_index, cmd_mcp, cmd_search, cmd_show
from rag.cli.serve import cmd_serve
from rag.cli.team import cmd_feedback_export, cmd_feedback_stats, cmd_keys_add, cmd_keys_list, cmd_keys_revoke
from rag.config import Settings


def build_parser() -> Parser:
    parser = argparse.ArgumentParser(prog="rag", description="Extractive question answering over a folder of documents.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_index, _show, _search, _ask, _serve, _mcp, _keys, _feedback, *OFFLINE_COMMANDS):
        add(sub)
    return parser




# --- index, show, search, ask, serve --------------------------------------------------------------------------

def _index(sub) -> None:
    p = sub.add_parser("index", help="build the index of a corpus folder (only what changed, unless --full)")
    corpus_args(p)
    p.add_argument("--full", action="store_true", help="rebuild everything instead of only added and changed files")
    watch_args(p, "after indexing once, keep watching the folder (until Ctrl-C): files saved, renamed and removed "
                   "there are indexed in batches once their writes settle, one line per batch")
    p.set_defaults(func=cmd_index)


def watch_args(p: Parser, what: str) -> None:
    p.add_argument("--watch", action="store_true", help=what)
    setting(p, "watch_settle_seconds", "--settle", type=seconds, metavar="SECONDS",
             help=f"with --watch: index a file once its size and time stayed the same this long (default {Settings.watch_settle_seconds})")
    setting(p, "watch_polling", "--watch-polling", action="store_true", default=None,
             help="with --watch: poll the folder instead of using inotify (network folders; also used when inotify fails)")


def _show(sub) -> None:
    p = sub.add_parser("show", help="print the passage around a citation, the cited characters marked")
    p.add_argument("source", help="the document, as cited")
    p.add_argument("start", type=int)
    p.add_argument("end", type=int)
    corpus_args(p)
    p.set_defaults(func=cmd_show)


def _search(sub) -> None:
    p = sub.add_parser("search", help="show the passages retrieved for a question")
    p.add_argument("question")
    query_args(p)
    source_arg(p)
    p.set_defaults(func=cmd_search)


def _ask(sub) -> None:
    p = sub.add_parser("ask", help="answer a question (or, with none, open an interactive prompt)")
    p.add_argument("question", nargs="?", help="the question; leave it out to ask line after line")
    query_args(p)
    source_arg(p)
    p.set_defaults(func=cmd_ask)


def source_arg(p: Parser) -> None:
    p.add_argument("--source", action="append", dest="sources", metavar="PATTERN",
                   help="search only documents with this name or glob (`reports/2024/*.pdf`); repeatable")


def _serve(sub) -> None:
    p = sub.add_parser("serve", help="serve POST /ask over HTTP")
    corpus_args(p)
    reader_args(p)
    data_arg(p)
    p.add_argument("--metrics-public", action="store_true",
                   help="serve GET /metrics without a key even when keys exist (it counts every collection, by name)")
    setting(p, "feedback_per_minute", "--feedback-per-minute", type=positive, metavar="N",
             help=f"feedback verdicts kept per API key in any minute (all workers together); more get 429 "
                  f"(default {Settings.feedback_per_minute})")
    setting(p, "feedback_cap", "--feedback-cap", type=positive, metavar="N",
             help=f"feedback verdicts kept per collection; past it POST /feedback is a 429 (default {Settings.feedback_cap:,})")
    p.add_argument("--writable-default", action="store_true",
                   help="let uploads and deletes change the default collection, i.e. the files of --docs")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="serve a non-loopback --host although no API key exists (anyone who reaches it may read and write)")
    watch_args(p, "keep every collection's folder (--docs, and DATA/collections/NAME/docs) in step with its index: files "
                   "saved, renamed and removed there are indexed in batches once their writes settle (/health: watch)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8000)
    p.add_argument("--workers", type=workers, default=0, metavar="N",
                   help="worker processes, each with its own copy of the models and cores/N threads (default: one"
                        " per two cores); uploads, deletes and metrics are shared between them")
    p.add_argument("--allowed-hosts", nargs="+", metavar="NAME",
                   help="Host header names to answer (others get 400); default: on a loopback --host, only "
                        "localhost, 127.0.0.1 and [::1] (no DNS rebinding); otherwise any")
    no_rebuild_arg(p)
    p.set_defaults(func=cmd_serve)


def _mcp(sub) -> None:
    p = sub.add_parser("mcp", help="serve the documents to an agent as MCP tools (ask, search, list_documents) over stdio")
    corpus_args(p)
    reader_args(p)
    data_arg(p)
    no_rebuild_arg(p)
    p.set_defaults(func=cmd_mcp)


def data_arg(p: Parser) -> None:
    setting(p, "data_dir", "--data", type=Path, metavar="DIR",
             help="the server's data folder: managed collections and API keys (default $RAG_DATA, else ~/.local/share/rag)")


def _keys(sub) -> None:
    p = sub.add_parser("keys", help="API keys of a server's data folder: add, list, revoke")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="{add,list,revoke}")
    k = keys.add_parser("add", help="create a key and print its token once, alone on the last line")
    k.add_argument("name", help="the key's name (shown in the access log)")
    k.add_argument("--scope", choices=("read", "write"), required=True,
                   help="read: ask, read documents, list, give feedback; write: also upload and delete documents "
                        "(and, with --collections '*', create and delete collections)")
    k.add_argument("--collections", default="*", metavar="NAME[,NAME]",
                   help="the collections the key reaches; any other is a 404 to it, as if it did not exist. "
                        "'*' (the default): every collection, also those made later, and /metrics")
    data_arg(k)
    k.set_defaults(func=cmd_keys_add)
    k = keys.add_parser("list", help="the keys: name, scope, collections, created, last used (never a token)")
    data_arg(k)
    k.set_defaults(func=cmd_keys_list)
    k = keys.add_parser("revoke", help="delete a key: its token stops working at once")
    k.add_argument("name")
    data_arg(k)
    k.set_defaults(func=cmd_keys_revoke)


def _feedback(sub) -> None:
    p = sub.add_parser("feedback", help="the users' verdicts on answers: export them as SQuAD 2.0, or their statistics")
    feedback = p.add_subparsers(dest="feedback_command", required=True, metavar="{export,stats}")
    f = feedback.add_parser("export", help="the labelled questions as SQuAD 2.0, for `rag eval --squad`")
    f.add_argument("--squad", type=Path, required=True, metavar="OUT.json", help="the file to write")
    feedback_args(f, cmd_feedback_export)
    f = feedback.add_parser("stats", help="counts by verdict, and observed precision by score bin against the calibration")
    feedback_args(f, cmd_feedback_stats)


def feedback_args(f: Parser, func) -> None:
    f.add_argument("--collection", metavar="NAME", help="only this collection's feedback (default: all)")
    data_arg(f)
    corpus_args(f)  # where the default collection's documents are
    f.set_defaults(func=func)


