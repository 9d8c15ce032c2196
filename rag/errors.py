"""The one base of every error whose message is meant for the user (shown without a traceback).

This module imports nothing from the package, so every stage can subclass RagError without cycles."""
from __future__ import annotations


class RagError(Exception):
    """An expected failure; its message says what is wrong and what to do, in one line."""


class UnavailableError(RagError):
    """Something an answer depends on (the index database) cannot be reached now; retrying later may work."""


class QuestionError(RagError):
    """The question cannot be answered as asked (too long for the reader, nothing left after cleaning)."""

    field = "question"  # the request field at fault, as the HTTP error names it


class TopKError(QuestionError):
    """top_k is outside what the service allows."""

    field = "top_k"


def user_message(err: BaseException) -> str | None:
    """The message to show for an expected failure, or None for a bug (which keeps its traceback)."""
    if isinstance(err, RagError):
        return str(err)
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return f"{err.strerror}: {err.filename}"
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}" + (f": {err.filename}" if err.filename else "")
    return None
