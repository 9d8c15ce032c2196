"""Command line: `rag index | search | ask | eval | serve | train-reader | calibrate-reader`."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rag.config import PACKAGED_READER_DIR, RETRIEVAL_MODES, Settings
from rag.config import READER_BACKENDS as BACKENDS
from rag.console import escape_name
from rag.text import plural


def _settings(args: argparse.Namespace) -> Settings:
    return Settings().with_overrides(
        docs_dir=getattr(args, "docs", None),
        index_dir=getattr(args, "index", None),
        top_k=getattr(args, "top_k", None),
        retrieval_mode=getattr(args, "mode", None),
        reader_model=getattr(args, "reader", None),
        follow_links=getattr(args, "follow_links", None),
        reader_backend=getattr(args, "reader_backend", None),
        store=getattr(args, "store", None),
    )


def cmd_index(args: argparse.Namespace) -> int:
    from rag.embedding import Embedder
    from rag.index import index_corpus
    from rag.offline.export import prepare_fast_start

    settings = _settings(args)
    for line in prepare_fast_start(settings):  # once per model: later processes then start without torch
        print(line)
    if settings.store:
        from rag.postgres import index_postgres

        r = index_postgres(settings, Embedder.from_settings(settings), full=args.full, progress=True)
        print(f"indexed {plural(r.documents, 'document')} into {plural(r.passages, 'passage')} in {r.seconds:.1f} s "
              f"({r.added_or_changed} added or changed, {r.removed} removed, {plural(r.embedded, 'passage')} embedded)"
              " -> PostgreSQL store")
        _print_skipped(r.skipped, r.unsupported)
        return 0
    index = index_corpus(settings, Embedder.from_settings(settings), full=args.full)
    m = index.manifest
    formats = ", ".join(f"{n} {kind}" for kind, n in m["formats"].items())
    build = m["build"]
    how = (f"{build['documents_reused']} unchanged reused, {plural(build['passages_embedded'], 'passage')} embedded"
           if build["incremental"] else "full build")
    print(f"indexed {plural(m['n_documents'], 'document')} ({formats}) from {index.docs_dir} into "
          f"{plural(m['n_chunks'], 'passage')} in {m['build_seconds']:.1f} s ({how}) -> {settings.index_dir}")
    _print_skipped(m["skipped"], m["unsupported"])
    return 0


def _print_skipped(skipped: dict[str, str], unsupported: dict[str, int]) -> None:
    if skipped:
        print(f"skipped {len(skipped)}:")
        for source, reason in skipped.items():
            print(f"  {escape_name(source)}: {reason}")
    if unsupported:
        kinds = ", ".join(f"{n} {ext}" for ext, n in unsupported.items())
        print(f"not read ({plural(sum(unsupported.values()), 'file')} of formats rag does not read): {kinds}")


def cmd_show(args: argparse.Namespace) -> int:
    """The passage around a citation with the cited characters marked, from the index alone (no model)."""
    from rag.chunking import sentence_spans
    from rag.index import load_index

    settings = _settings(args)
    if settings.store:
        from rag.postgres import PostgresStore, describe_dsn

        store = PostgresStore(settings)
        try:
            document = store.documents.get(args.source)
        finally:
            store.close()
    else:
        document = load_index(settings.index_dir).documents.get(args.source)
    if document is None:
        where = f"the store at {describe_dsn(settings.store)}" if settings.store else f"the index at {settings.index_dir}"
        raise UsageError(f"{escape_name(args.source)!r} is not a document of {where}")
    text = document.text
    if not 0 <= args.start < args.end <= len(text):
        raise UsageError(f"START and END must satisfy 0 <= START < END <= {len(text)} (the document's length)")
    spans = sentence_spans(text)
    inside = [i for i, (a, b) in enumerate(spans) if a < args.end and b > args.start] or [0]
    first, last = max(0, inside[0] - 1), min(len(spans) - 1, inside[-1] + 1)  # one sentence either side
    lo, hi = min(spans[first][0], args.start), max(spans[last][1], args.end)
    where = [f"page {document.page_at(args.start)}"] if document.pages else []
    if (heading := document.heading_at(args.start)) is not None:
        where.append(f'under "{heading}"')
    print(f"{escape_name(args.source)} [{args.start}:{args.end}]" + (f" ({', '.join(where)})" if where else ""))
    print(f"{text[lo:args.start]}[[{text[args.start:args.end]}]]{text[args.end:hi]}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from rag.retrieval import Retriever

    settings = _settings(args)
    question = _question(args.question, settings)
    passages = Retriever.open(settings, rebuild=not args.no_rebuild).run(question)
    if args.json:
        print(json.dumps({"question": question, "passages": [p.to_dict() for p in passages]}, ensure_ascii=False, indent=2))
    else:
        for p in passages:
            c = p.chunk
            print(f"[{p.rank + 1}] {escape_name(c.source)} [{c.start}:{c.end}] score={p.score:.4f}\n    {c.text}\n")
    return 0


def _pipeline(args: argparse.Namespace, settings: Settings):
    from rag.pipeline import Pipeline

    return Pipeline.from_settings(settings, rebuild=not getattr(args, "no_rebuild", False))


def format_answer(answer) -> str:
    """A human-readable answer: the words, the score, the source and the quoted sentence with the answer marked."""
    score = f"{answer.score:.2f}" + ("" if answer.calibrated else ", uncalibrated: not a probability")
    if answer.answer is None:
        lines = [f"No answer found in the documents (confidence of the best candidate {score})."]
        if answer.passages:
            lines.append("Closest passages:")
            lines += [f"  - {escape_name(p.chunk.source)} [{p.chunk.start}:{p.chunk.end}]: {_shorten(p.chunk.text)}" for p in answer.passages[:3]]
        return "\n".join(lines + _uncalibrated_note(answer))
    cite = answer.citations[0]
    a, b = cite.start - cite.quote_start, cite.end - cite.quote_start
    marked = f"{cite.quote[:a]}[[{cite.quote[a:b]}]]{cite.quote[b:]}"
    lines = [f"Answer: {answer.answer}  (score {score})", f"Source: {_place(cite)} [{cite.start}:{cite.end}]",
             f"  \"{marked}\""]
    if len(answer.citations) > 1:
        lines.append("Also in: " + ", ".join(f"{escape_name(c.source)} [{c.start}:{c.end}]" for c in answer.citations[1:]))
    return "\n".join(lines + _uncalibrated_note(answer))


def _uncalibrated_note(answer) -> list[str]:
    from rag.schema import UNCALIBRATED

    return [] if answer.calibrated else [f"Note: {UNCALIBRATED}"]


def _place(cite) -> str:
    """A citation's file, with its page or heading where the document has them."""
    return escape_name(cite.source) + (f", page {cite.page}" if cite.page else "") + (f", under \"{cite.heading}\"" if cite.heading else "")


def _shorten(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_ask(args: argparse.Namespace) -> int:
    from rag.schema import AskResponse

    settings = _settings(args)
    if args.question is not None:
        question = _question(args.question, settings)
        pipeline = _pipeline(args, settings)
        answer = pipeline.run(question)
        if args.json:
            print(AskResponse.from_answer(answer).model_dump_json(indent=2))
        else:
            print(format_answer(answer))
        return 0
    return _interactive(args, settings)


def _interactive(args: argparse.Namespace, settings: Settings) -> int:
    """Answer questions line by line from standard input until `exit` or end of input."""

    tty = sys.stdin.isatty()
    if tty:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
        print("Loading the index and models…", file=sys.stderr)
    pipeline = _pipeline(args, settings)
    if tty:
        print("Ask a question (`exit` or Ctrl-D to leave).", file=sys.stderr)
    while True:
        try:  # Ctrl-C anywhere in a turn (at the prompt, or while answering) cancels the turn, not the session
            line = _read_line(tty)
            if line is None or line.lower() in ("exit", "quit"):
                break
            if line:
                _answer_line(line, pipeline, settings, args.json)
        except KeyboardInterrupt:
            print("\nrag: cancelled", file=sys.stderr, flush=True)
    return 0


def _read_line(tty: bool) -> str | None:
    """The next question line, stripped; None at the end of input (Ctrl-D)."""
    if not tty:
        line = sys.stdin.readline()
        return line.strip() if line else None
    print("\nquestion> ", end="", file=sys.stderr, flush=True)  # stderr: stdout holds only answers
    try:
        return input().strip()
    except EOFError:
        print(file=sys.stderr)
        return None


def _answer_line(line: str, pipeline, settings: Settings, as_json: bool) -> None:
    """Answer one line of the interactive session; a bad question or a failure is reported, not raised."""
    from rag.errors import user_message
    from rag.schema import AskResponse

    try:
        question = _question(line, settings)
        answer = pipeline.run(question)
    except UsageError as err:
        print(f"rag: {err}", file=sys.stderr, flush=True)
        return
    except Exception as err:  # noqa: BLE001 - one failed question must not end the session
        message = user_message(err)
        logging.getLogger("rag").debug("question failed", exc_info=True)
        print(f"rag: error: {message or f'could not answer this question ({type(err).__name__}: {err})'}",
              file=sys.stderr, flush=True)
        return
    if as_json:
        print(AskResponse.from_answer(answer).model_dump_json(), flush=True)
    else:
        print(f"Q: {question}\n{format_answer(answer)}\n", flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rag.server import allowed_hosts_for, create_app, uvicorn_limits

    settings = _settings(args)
    _check_port(args.host, args.port)  # before minutes of loading, not after
    from rag.console import SafeFormatter

    logging.getLogger().handlers[0].setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    pipeline = _pipeline(args, settings)  # load here, so a missing index or model fails with a clear message
    logging.getLogger("rag.server").info("listening on http://%s:%d (POST /ask, GET /health, /docs)", args.host, args.port)
    app = create_app(settings, pipeline=pipeline, allowed_hosts=allowed_hosts_for(args.host, args.allowed_hosts))
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, **uvicorn_limits())
    finally:
        pipeline.close()
    return 0


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


def _port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return port


def cmd_eval(args: argparse.Namespace) -> int:
    from rag.offline import evaluation

    settings = _settings(args)
    if args.retrieval:
        report = evaluation.retrieval_report(settings, args.qa, ks=(1, 5))
        print(json.dumps(report, indent=2) if args.json else evaluation.format_retrieval(report))
        return 0
    if args.squad:
        report = evaluation.evaluate_squad(settings, args.squad, limit=args.limit, split=args.split)
    else:
        report = evaluation.evaluate_qa_file(settings, args.qa, rebuild=not args.no_rebuild)
    if args.report:
        evaluation.write_markdown(report, args.report)
    if args.json:
        print(json.dumps(report.metrics, indent=2))
    else:
        print(evaluation.format_table(report))
        if args.report:
            print(f"\nreport with every miss: {args.report}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from rag.offline import bench

    if args.bench == "serve":
        print(bench.run_benchmark(requests_per_level=args.requests, levels=args.concurrency, docs=args.docs,
                                  index=args.index, questions_file=args.questions))
    elif args.bench == "backends":
        print(bench.run_backend_benchmark(args.workdir, args.requests, questions_file=args.questions))
    elif args.bench == "scale":
        print(bench.run_scale_benchmark(args.squad_file, args.sizes, args.workdir, args.plot, args.requests))
    elif args.bench == "stores":
        print(bench.run_store_benchmark(args.store, args.squad_file, args.workdir, args.passages, args.requests,
                                        seeds=args.seeds, questions_file=args.questions))
    elif args.bench == "incremental":
        print(bench.run_incremental_benchmark(args.squad_file, args.workdir, args.files))
    else:  # curve
        readers = []
        for spec in args.readers:
            label, _, folder = spec.rpartition("=")
            readers.append((label or Path(folder).name, Path(folder)))
        print(bench.run_learning_curve(args.squad_file, readers, args.plot, questions_file=args.questions))
    return 0


def cmd_calibrate_reader(args: argparse.Namespace) -> int:
    from rag.offline.calibrate import calibrate_reader

    if args.study:  # a measurement kept out of the package: scripts/calibration_study.py of a repository checkout
        import importlib.util

        from rag.config import REPO_DIR

        script = REPO_DIR / "scripts" / "calibration_study.py"
        if not script.is_file():
            raise UsageError(f"--study runs {script}, which this installation does not have; run "
                             "`python scripts/calibration_study.py --train … --model …` in a checkout of the repository")
        spec = importlib.util.spec_from_file_location("calibration_study", script)
        study = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(study)
        print(study.calibration_study(Path(args.train_file), Path(args.model), args.f1_tolerance or 0.5))
        return 0
    meta = calibrate_reader(Path(args.train_file), Path(args.model), f1_tolerance=args.f1_tolerance)
    print(json.dumps(meta["calibration_report"], indent=2))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from rag.offline.training import lineage_table
    from rag.reader import resolve_reader_model

    print(lineage_table(Path(resolve_reader_model(args.model))))
    return 0


def cmd_export_reader(args: argparse.Namespace) -> int:
    from rag.offline.export import export_reader

    record = export_reader(args.model)
    print(json.dumps(record, indent=2))
    return 0


def cmd_train_reader(args: argparse.Namespace) -> int:
    from rag.offline.calibrate import calibrate_reader
    from rag.offline.training import TrainConfig, resume_training, train

    if args.resume:
        result = resume_training(Path(args.resume), stop_after=args.stop_after_steps)
    else:
        if not args.train_file or not args.output:
            raise UsageError("--train and --output are required (or --resume DIR to continue a run)")
        fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
        if args.init is not None:
            fields["init"] = str(args.init)
        fields["fresh_extra"] = not args.no_fresh_extra
        result = train(TrainConfig(**fields), stop_after=args.stop_after_steps)
    if result is None:
        print(f"stopped with a checkpoint; continue with `rag train-reader --resume {args.resume or args.output}`")
        return 0
    meta = result.meta
    if not args.no_calibrate:  # the same loaded reader and embedder: each model loads once
        out = Path(meta["config"]["output"])
        meta = calibrate_reader(Path(meta["config"]["train_file"]), out, embedder=result.embedder, reader=result.reader)
    print(json.dumps(meta.get("dev_gold_paragraph", {}), indent=2))
    return 0


class UsageError(Exception):
    """A bad argument value, reported like argparse's own errors."""


def _question(text: str, settings: Settings) -> str:
    """The question as the API would take it (AskRequest's checks and cleaning), or a usage error."""
    from pydantic import ValidationError

    from rag.schema import AskRequest

    if len(text or "") > settings.max_question_chars:
        raise UsageError(f"the question is {len(text)} characters long; the limit is {settings.max_question_chars}")
    try:
        return AskRequest(question=text or "").question
    except ValidationError as err:
        raise UsageError(str(err.errors()[0].get("msg", "invalid")).removeprefix("Value error, ")) from None


def _top_k(value: str) -> int:
    k = int(value)
    if not 1 <= k <= Settings.max_top_k:
        raise argparse.ArgumentTypeError(f"must be between 1 and {Settings.max_top_k}")
    return k


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Extractive question answering over a folder of documents.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    def corpus_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--docs", type=Path, help="corpus folder (default: seeds/)")
        p.add_argument("--index", type=Path, help="index folder (default: index/)")
        p.add_argument("--store", metavar="DSN",
                       help="keep the index in PostgreSQL + pgvector instead of --index (postgresql://user@host/db;"
                            " default: $RAG_STORE)")
        p.add_argument("--follow-links", action="store_true", default=None,
                       help="also index files that symbolic links inside the corpus folder point to outside it")

    def reader_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reader", help="reader model folder or hub name (default: the packaged reader)")
        p.add_argument("--reader-backend", choices=BACKENDS,
                       help="auto: the fp32 weights through their cached ONNX export (made by `rag index`) when there is one, "
                            f"else torch; torch: always torch; onnx: the int8 export (default {Settings.reader_backend})")

    def query_args(p: argparse.ArgumentParser) -> None:
        corpus_args(p)
        p.add_argument("--top-k", type=_top_k, help=f"passages to retrieve (1-{Settings.max_top_k}, default {Settings.top_k})")
        p.add_argument("--mode", choices=RETRIEVAL_MODES, help=f"retrieval mode (default {Settings.retrieval_mode})")
        reader_args(p)
        p.add_argument("--no-rebuild", action="store_true", help="fail instead of rebuilding a missing or stale index")
        p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("index", help="build the index of a corpus folder (only what changed, unless --full)")
    corpus_args(p)
    p.add_argument("--full", action="store_true", help="rebuild everything instead of only added and changed files")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("show", help="print the passage around a citation, the cited characters marked")
    p.add_argument("source", help="the document, as cited")
    p.add_argument("start", type=int)
    p.add_argument("end", type=int)
    corpus_args(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("search", help="show the passages retrieved for a question")
    p.add_argument("question")
    query_args(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ask", help="answer a question (or, with none, open an interactive prompt)")
    p.add_argument("question", nargs="?", help="the question; leave it out to ask line after line")
    query_args(p)
    p.set_defaults(func=cmd_ask)

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

    p = sub.add_parser("serve", help="serve POST /ask over HTTP")
    corpus_args(p)
    reader_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--allowed-hosts", nargs="+", metavar="NAME",
                   help="Host header names to answer (others get 400); default: on a loopback --host, only "
                        "localhost, 127.0.0.1 and [::1] (no DNS rebinding); otherwise any")
    p.add_argument("--no-rebuild", action="store_true", help="fail instead of rebuilding a missing or stale index")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("bench", help="benchmarks: the server's /ask latency and throughput, the reader's runtimes, cost "
                                     "against corpus size, the stores, incremental indexing, the learning curve")
    p.set_defaults(func=cmd_bench)
    bench = p.add_subparsers(dest="bench", required=True)

    def questions_arg(b: argparse.ArgumentParser) -> None:
        b.add_argument("--questions", type=Path, metavar="FILE",
                       help="the seed questions, JSONL (default: the repository's eval/qa.jsonl)")

    def workdir_arg(b: argparse.ArgumentParser, name: str) -> None:
        b.add_argument("--workdir", type=Path, default=Path("build") / name, metavar="DIR",
                       help=f"scratch folder, emptied first (default build/{name})")

    def squad_arg(b: argparse.ArgumentParser, what: str) -> None:
        b.add_argument("squad_file", type=Path, metavar="SQUAD_FILE", help=f"a SQuAD 2.0 file: {what}")

    b = bench.add_parser("serve", help="start the server and measure /ask latency, throughput and peak memory")
    b.add_argument("--docs", type=Path, metavar="DIR", help="corpus folder (default: seeds/)")
    b.add_argument("--index", type=Path, metavar="DIR", help="index folder (default: index/)")
    b.add_argument("--requests", type=int, default=48, metavar="N", help="requests per concurrency level (default 48)")
    b.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], metavar="N",
                   help="requests in flight at each level (default 1 4 16)")
    questions_arg(b)

    b = bench.add_parser("backends", help="the reader through torch fp32, ONNX Runtime fp32 and int8 on the seeds: /ask "
                                          "latency, answer quality and a per-stage profile")
    b.add_argument("--requests", type=int, default=48, metavar="N", help="/ask requests per runtime (default 48)")
    workdir_arg(b, "backend-bench")
    questions_arg(b)

    b = bench.add_parser("scale", help="build corpora of --sizes passages; index build time, size, peak memory and "
                                       "/ask latency for each, with a plot")
    squad_arg(b, "the corpora are made from its contexts (and those of the extra file beside it)")
    b.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000], metavar="N",
                   help="corpus sizes in passages (default 1000 10000 100000)")
    b.add_argument("--requests", type=int, default=48, metavar="N", help="/ask requests per corpus (default 48)")
    workdir_arg(b, "scale-bench")
    b.add_argument("--plot", type=Path, default=Path("docs/scale.png"), metavar="FILE",
                   help="where to write the plot (default docs/scale.png)")

    b = bench.add_parser("stores", help="the file store against PostgreSQL on the seeds and on a large corpus")
    squad_arg(b, "the large corpus is made from its contexts")
    b.add_argument("--store", metavar="DSN", required=True,
                   help="a PostgreSQL server where databases may be created (postgresql://user@host/db)")
    b.add_argument("--passages", type=int, default=10_000, metavar="N", help="size of the large corpus (default 10000)")
    b.add_argument("--requests", type=int, default=24, metavar="N", help="/ask requests per corpus and store (default 24)")
    b.add_argument("--seeds", type=Path, default=Path("seeds"), metavar="DIR", help="the small corpus (default seeds/)")
    workdir_arg(b, "store-bench")
    questions_arg(b)

    b = bench.add_parser("incremental", help="time a full and an incremental index of a corpus with one file changed")
    squad_arg(b, "the corpus is made from its contexts")
    b.add_argument("--files", type=int, default=1000, metavar="N", help="corpus size in files (default 1000)")
    workdir_arg(b, "incremental-bench")

    b = bench.add_parser("curve", help="the learning curve of reader versions (windows seen against dev, seed-set and "
                                       "test F1), with a plot")
    squad_arg(b, "its test articles are the test set")
    b.add_argument("--readers", nargs="+", metavar="LABEL=DIR", required=True, help="the reader versions, oldest first")
    b.add_argument("--plot", type=Path, default=Path("docs/learning-curve.png"), metavar="FILE",
                   help="where to write the plot (default docs/learning-curve.png)")
    questions_arg(b)
    bench.metavar = "{" + ",".join(bench.choices) + "}"  # so that a missing one's error lists them, as the usage does

    p = sub.add_parser("calibrate-reader", help="refit the reader's answerability calibration on the dev split")
    p.add_argument("--train", dest="train_file", required=True, help="the SQuAD 2.0 file the reader was trained on")
    p.add_argument("--model", required=True, help="reader model folder")
    p.add_argument("--study", action="store_true",
                   help="write nothing; compare calibration features and threshold rules on dev and test")
    p.add_argument("--f1-tolerance", type=float, default=None,
                   help="choose the highest threshold whose open-domain dev F1 is within this many points of the"
                        " best: fewer wrong answers for a little F1 (default Settings: 0, the max-F1 threshold;"
                        " --study compares 0 with this, default 0.5)")
    p.set_defaults(func=cmd_calibrate_reader)

    p = sub.add_parser("lineage", help="the runs that made a reader, as a table (the learning curve of cumulative training)")
    p.add_argument("--model", default=Settings.reader_model, help="reader folder (default: the packaged reader)")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("export-reader", help="write the reader's int8 ONNX export beside its weights")
    p.add_argument("--model", default=Settings.reader_model, help="reader folder (default: the packaged reader)")
    p.set_defaults(func=cmd_export_reader)

    p = sub.add_parser("train-reader", help="fine-tune the extractive reader (SQuAD 2.0 format)")
    p.add_argument("--train", dest="train_file", help="SQuAD 2.0 file (dev/test articles are held out)")
    p.add_argument("--output", help="model folder to write (a resumable checkpoint goes in its checkpoint/ folder)")
    p.add_argument("--init", nargs="?", const=str(PACKAGED_READER_DIR), type=Path,
                   help="continue training this reader, QA head kept (no value: the packaged reader); "
                        "its lineage carries on and only extra questions its runs did not use are drawn")
    p.add_argument("--no-fresh-extra", action="store_true", help="with --init: allow extra questions earlier runs used")
    p.add_argument("--resume", type=Path, metavar="OUTPUT", help="continue the cut-off run that writes to OUTPUT, exactly")
    p.add_argument("--checkpoint-minutes", type=float, help="write a full checkpoint this often (default 10)")
    p.add_argument("--stop-after-steps", type=int, help="stop after this many steps with a checkpoint (to resume later)")
    p.add_argument("--extra", dest="extra_file", help="extra answerable SQuAD-format file")
    p.add_argument("--extra-sources", nargs="+", help="title prefixes of the extra file to sample from")
    p.add_argument("--extra-questions", type=int, help="questions sampled from the extra file")
    p.add_argument("--negative-fraction", type=float, help="share of answerable questions given a retrieved negative")
    p.add_argument("--base-model", help="encoder folder or hub name (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--warmup-fraction", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--stride", type=int)
    p.add_argument("--max-windows", type=int, help="cap on training windows (0: none)")
    p.add_argument("--dev-questions", type=int, help="evaluate on this many dev questions (0: all)")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads (0: torch's choice)")
    p.add_argument("--bf16", action="store_true", default=None,
                   help="bfloat16 autocast in training (weights stay fp32; faster on AVX512-BF16 CPUs and GPUs)")
    p.add_argument("--no-calibrate", action="store_true", help="skip fitting the answerability calibration")
    p.set_defaults(func=cmd_train_reader)
    return parser


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


def _main(argv: list[str] | None) -> int:
    from rag.console import SafeFormatter

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(SafeFormatter("%(levelname)s: %(message)s"))
    _quiet_model_loading()
    for noisy in ("httpx", "sentence_transformers", "bm25s", "transformers", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)
    if args.command in ("train-reader", "calibrate-reader", "serve"):
        logging.getLogger("rag").setLevel(logging.INFO)
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


if __name__ == "__main__":
    sys.exit(main())
