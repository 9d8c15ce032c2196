"""The commands that index and answer: `rag index`, `show`, `search`, `ask` (one question, or line after
line) and `serve`. The store is whichever the settings name (rag.store's factories): no command here
knows the kinds."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from rag.cli.common import UsageError, check_question, settings_from
from rag.config import Settings
from rag.console import escape_name
from rag.text import plural


def cmd_index(args: argparse.Namespace) -> int:
    from rag.pipeline.fast_start import prepare_fast_start
    from rag.store import index_store
    from rag.store.embedding import Embedder

    settings = settings_from(args)
    check_watch_flags(args, settings)
    for line in prepare_fast_start(settings):  # once per model: later processes then start without torch
        print(line)
    embedder = Embedder.from_settings(settings)
    report = index_store(settings, embedder, full=args.full, progress=True)
    formats = ", ".join(f"{n} {kind}" for kind, n in report.formats.items())
    print(f"indexed {plural(report.documents, 'document')} ({formats}) from {report.docs_dir} into "
          f"{plural(report.passages, 'passage')} in {report.seconds:.1f} s ({report.how}) -> {report.target}")
    _print_skipped(report.skipped, report.unsupported)
    if args.watch:
        return _watch_until_stopped(settings.with_overrides(docs_dir=report.docs_dir), embedder)
    return 0


def check_watch_flags(args: argparse.Namespace, settings: Settings) -> None:
    """--settle and --watch-polling only act with --watch, which needs the file index."""
    from rag.cli.common import refuse_without

    refuse_without(args, "watch", "--watch", settle="--settle", watch_polling="--watch-polling")
    if args.watch and settings.store:
        raise UsageError("--watch keeps the file index (--index) in step; it does not work with --store")


def _watch_until_stopped(settings: Settings, embedder) -> int:
    """`rag index --watch`: one line per synced batch until Ctrl-C or SIGTERM, which end it with one line
    (a sync under way is let finish: its index is written whole or not at all)."""
    import signal
    import threading

    from rag.service.watch_targets import watch_index

    stop, received = threading.Event(), []

    def on_signal(signum, frame) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        watcher = watch_index(settings, embedder, on_batch=lambda batch: print(batch.line(), flush=True))
        print(f"watching {settings.docs_dir} ({watcher.mode}); Ctrl-C to stop", flush=True)
        while not stop.wait(0.5):
            pass
        if watcher.syncing:
            print("stopping: letting the sync under way finish", file=sys.stderr, flush=True)
        watcher.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    newline = "\n" if received[:1] == [signal.SIGINT] and sys.stderr.isatty() else ""  # after the terminal's ^C
    print(f"{newline}stopped watching {settings.docs_dir} ({watcher.batches} batch{'' if watcher.batches == 1 else 'es'} synced)", file=sys.stderr, flush=True)
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
    from rag.ingest.chunking import sentence_spans, sentences_around
    from rag.store import read_store

    settings = settings_from(args)
    store = read_store(settings)
    try:
        document = store.documents.get(args.source)
        where = store.describe().get("database") or settings.index_dir  # a database, else the index folder
    finally:
        store.close()
    if document is None:
        raise UsageError(f"{escape_name(args.source)!r} is not a document of the index at {where}")
    text = document.text
    if not 0 <= args.start < args.end <= len(text):
        raise UsageError(f"START and END must satisfy 0 <= START < END <= {len(text)} (the document's length)")
    lo, hi = sentences_around(sentence_spans(text), args.start, args.end, extra=1)  # one sentence either side
    where = [f"page {document.page_at(args.start)}"] if document.pages else []
    if document.read_by_ocr(args.start):
        where.append("read by OCR")
    if (heading := document.heading_at(args.start)) is not None:
        where.append(f'under "{heading}"')
    print(f"{escape_name(args.source)} [{args.start}:{args.end}]" + (f" ({', '.join(where)})" if where else ""))
    print(f"{text[lo:args.start]}[[{text[args.start:args.end]}]]{text[args.end:hi]}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from rag.pipeline.retrieval import Retriever

    settings = settings_from(args)
    question = check_question(args.question, settings)
    retriever = Retriever.open(settings, rebuild=not args.no_rebuild)
    names = retriever.store.sources_matching(args.sources) if args.sources else None
    passages = retriever.run(question, None, names)
    if args.json:
        print(json.dumps({"question": question, "passages": [p.to_dict() for p in passages]}, ensure_ascii=False, indent=2))
    else:
        for p in passages:
            c = p.chunk
            print(f"[{p.rank + 1}] {escape_name(c.source)} [{c.start}:{c.end}] score={p.score:.4f}\n    {c.text}\n")
    return 0


def open_pipeline(args: argparse.Namespace, settings: Settings):
    from rag.pipeline.qa import Pipeline

    return Pipeline.from_settings(settings, rebuild=not args.no_rebuild)


def cmd_mcp(args: argparse.Namespace) -> int:
    """`rag mcp`: an MCP server on stdio; standard output carries the protocol, so nothing else is printed there."""
    from rag.service.mcp import serve_stdio

    serve_stdio(settings_from(args), rebuild=not args.no_rebuild)
    return 0


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
    from rag.service.schema import UNCALIBRATED

    return [] if answer.calibrated else [f"Note: {UNCALIBRATED}"]


def _place(cite) -> str:
    """A citation's file, with its page or heading where the document has them."""
    return (escape_name(cite.source) + (f", page {cite.page}" if cite.page else "")
            + (f", under \"{cite.heading}\"" if cite.heading else "") + (", read by OCR" if cite.ocr else ""))


def _shorten(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_ask(args: argparse.Namespace) -> int:
    from rag.service.schema import AskResponse

    settings = settings_from(args)
    if args.question is not None:
        question = check_question(args.question, settings)
        pipeline = open_pipeline(args, settings)
        answer = pipeline.run(question, sources=args.sources)
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
    pipeline = open_pipeline(args, settings)
    if tty:
        print("Ask a question (`exit` or Ctrl-D to leave).", file=sys.stderr)
    while True:
        try:  # Ctrl-C anywhere in a turn (at the prompt, or while answering) cancels the turn, not the session
            line = _read_line(tty)
            if line is None or line.lower() in ("exit", "quit"):
                break
            if line:
                _answer_line(line, pipeline, settings, args.json, args.sources)
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


def _answer_line(line: str, pipeline, settings: Settings, as_json: bool, sources: list[str] | None = None) -> None:
    """Answer one line of the interactive session; a bad question or a failure is reported, not raised."""
    from rag.errors import user_message
    from rag.service.schema import AskResponse

    try:
        question = check_question(line, settings)
        answer = pipeline.run(question, sources=sources)
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
