"""A conversion in a process of its own at a lower scheduling priority: what the server uses for uploads,
so that a 2,000-page PDF's minutes of pure-Python parsing hold neither the server's GIL nor, while
questions are answered, its cores, and the memory a large file takes to convert goes back when the child
ends. JSON both ways (`python -m rag.ingest.converters NICENESS`): nothing is unpickled."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from rag.ingest.converters.base import ConversionError, Converted, ConvertOptions, ExpansionError

log = logging.getLogger(__name__)

#: Formats whose text is never longer than their bytes, and the size up to which such a file converts in the
#: caller's own process (a child process costs about 0.3 s to start); anything else converts apart.
PLAIN_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")
CONVERT_HERE_BYTES = 256 * 1024


def convert_upload(suffix: str, data: bytes, options: ConvertOptions, niceness: int) -> Converted:
    """rag.ingest.converters.convert, apart (convert_apart) unless the file is small text, Markdown or HTML
    (up to CONVERT_HERE_BYTES), which converts here in less time than a process takes to start, or
    `niceness` is 0 (Settings.indexing_niceness: indexing as any other work of the server)."""
    if niceness <= 0 or (suffix.lower() in PLAIN_SUFFIXES and len(data) <= CONVERT_HERE_BYTES):
        from rag.ingest.converters import convert

        return convert(suffix, data, options)
    return convert_apart(suffix, data, options, niceness)


def convert_apart(suffix: str, data: bytes, options: ConvertOptions, niceness: int) -> Converted:
    """rag.ingest.converters.convert in a child process whose niceness is raised by `niceness`, on one
    thread (OMP_NUM_THREADS=1 for OCR); its ConversionError and ExpansionError are raised here as there."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    here = str(Path(__file__).resolve().parents[3])  # the child runs this copy of rag, wherever it was started
    env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])
    request = json.dumps({"suffix": suffix, "options": {**dataclasses.asdict(options), "progress": False}})
    done = subprocess.run([sys.executable, "-m", "rag.ingest.converters", str(niceness)],
                          input=request.encode() + b"\n" + data, capture_output=True, env=env, check=False)
    try:
        reply = json.loads(done.stdout)
    except ValueError:
        log.error("converting a %s file in a child process failed (exit code %s): %s", suffix, done.returncode,
                  done.stderr.decode("utf-8", "replace")[-2000:])
        raise ConversionError(f"cannot be converted (the converting process ended with exit code {done.returncode})") \
            from None
    if "error" in reply:
        raise (ExpansionError if reply["error"] == "expansion" else ConversionError)(reply["message"])
    c = reply["converted"]
    return Converted(c["text"], c["format"], tuple(c["pages"]), tuple((o, t) for o, t in c["headings"]),
                     tuple(c["ocr_pages"]))


def main(argv: list[str]) -> int:
    """The child: one JSON line ({"suffix", "options"}) then the file's bytes on standard input; one JSON
    object ({"converted": …} or {"error": "conversion"|"expansion", "message": …}) on standard output."""
    os.nice(int(argv[0]) if argv else 10)
    from rag.ingest.converters import convert

    request = json.loads(sys.stdin.buffer.readline())
    data = sys.stdin.buffer.read()
    try:
        reply = {"converted": dataclasses.asdict(convert(request["suffix"], data, ConvertOptions(**request["options"])))}
    except ExpansionError as err:
        reply = {"error": "expansion", "message": str(err)}
    except ConversionError as err:
        reply = {"error": "conversion", "message": str(err)}
    sys.stdout.write(json.dumps(reply))
    return 0
