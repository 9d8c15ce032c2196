"""What the CLI prints is escaped: a file name or document text can hold terminal escape sequences (clear
the screen, set the window title) or bidi overrides (`invoice‮gpj.txt` shown as `invoicetxt.jpg`), and
none of them may reach the terminal as it is. JSON output keeps its meaning: escapes are JSON's `\\uXXXX`."""
from __future__ import annotations

import contextlib
import logging
import re
import sys

#: Bidirectional formatting characters: they reorder what a terminal shows.
BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# C0 controls but tab and newline, a carriage return not followed by a newline, DEL, C1 controls, bidi.
_UNSAFE = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{BIDI}]|\r(?!\n)")
_UNSAFE_BUT_CR = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{BIDI}]")
_UNSAFE_IN_LOGS = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{BIDI}]")
_UNSAFE_IN_NAMES = re.compile(f"[\x00-\x1f\x7f-\x9f{BIDI}]")


def _escape(match: re.Match) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape(text: str) -> str:
    """`text` with every character that could steer a terminal written as `\\uXXXX` (tabs, newlines and
    CRLF line ends kept)."""
    return _UNSAFE.sub(_escape, text)


def escape_name(name: str) -> str:
    """A file name for one line of output: newlines and tabs escaped too."""
    return _UNSAFE_IN_NAMES.sub(_escape, name)


class SafeStream:
    """A text stream that escapes what is written to it (rag.console.escape), else the stream it wraps.
    With `progress`, a lone carriage return passes (progress bars redraw their line with it)."""

    def __init__(self, stream, progress: bool = False) -> None:
        self._stream = stream
        self._pattern = _UNSAFE_BUT_CR if progress else _UNSAFE

    def write(self, text: str) -> int:
        self._stream.write(self._pattern.sub(_escape, text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class SafeFormatter(logging.Formatter):
    """Log lines with every control character of their message escaped (a lone carriage return too, which
    standard error otherwise lets through for the progress bars)."""

    def format(self, record: logging.LogRecord) -> str:
        return _UNSAFE_IN_LOGS.sub(_escape, super().format(record))


@contextlib.contextmanager
def safe_output():
    """Standard output and standard error escaped for as long as the block runs."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeStream(out), SafeStream(err, progress=True)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
