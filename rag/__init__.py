"""rag: extractive question answering over a folder of documents, in three lines:

    from rag import Pipeline
    qa = Pipeline.from_folder("path/to/docs")
    print(qa.ask("Who ...?").answer)

The names below import on first use, so `rag --help` and a one-shot `rag ask` stay fast."""
from __future__ import annotations

import importlib

__all__ = ["Answer", "Chunk", "Citation", "Document", "Passage", "Pipeline", "QuestionError", "RagError", "Settings",
           "SettingsError"]

_WHERE = {"Answer": "rag.records", "Chunk": "rag.records", "Citation": "rag.records", "Document": "rag.records",
          "Passage": "rag.records", "Pipeline": "rag.pipeline.qa", "QuestionError": "rag.errors", "RagError": "rag.errors",
          "Settings": "rag.config", "SettingsError": "rag.config"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rag' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
