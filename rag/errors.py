"""Which exceptions carry a message meant for the user (shown without a traceback)."""
from __future__ import annotations

from rag.evaluation import EvalError
from rag.index import IndexLoadError
from rag.ingest import CorpusError
from rag.reader import ReaderError


def user_message(err: BaseException) -> str | None:
    """The message to show for an expected failure, or None for a bug (which keeps its traceback)."""
    if isinstance(err, (IndexLoadError, CorpusError, ReaderError, EvalError)):
        return str(err)
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f"{err.strerror}: {err.filename}"
    return None
