"""Prometheus metrics for the people who run the service (GET /metrics, through prometheus-client): requests
by route and status, /ask latency, answers against abstentions, feedback verdicts, the reader's forward-pass
time, documents and passages per collection, and the runtimes in use. One registry per app (per process);
under `rag serve --workers N` (PROMETHEUS_MULTIPROC_DIR set) every worker writes its samples to that folder
and a scrape of any worker sums them all (prometheus-client's multiprocess mode)."""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rag.errors import RagError

#: Latency buckets (seconds) around what a CPU answer costs: ~0.2-0.3 s on 2 cores.
SECONDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


class Metrics:
    """The service's metrics; the gauges of the collections and runtimes are read when scraped."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode the samples live in the shared folder and a scrape collects them there, so the
        # metrics themselves stay out of any registry (else this worker's would count twice).
        r = self.registry = None if self.multiprocess else CollectorRegistry()
        self.requests = Counter("rag_requests", "HTTP requests by route template and status.", ["route", "status"], registry=r)
        self.ask_seconds = Histogram("rag_ask_seconds", "Time to answer a question (retrieve, read, decide, cite).",
                                     buckets=SECONDS, registry=r)
        self.answers = Counter("rag_answers", "Questions answered or abstained on.", ["outcome"], registry=r)
        self.feedback = Counter("rag_feedback", "Feedback received, by verdict.", ["verdict"], registry=r)
        self.forward_seconds = Histogram("rag_reader_forward_seconds", "The reader's forward passes for one question.",
                                         buckets=SECONDS, registry=r)
        self.documents = Gauge("rag_collection_documents", "Documents per collection.", ["collection"], registry=r,
                               multiprocess_mode="mostrecent")
        self.passages = Gauge("rag_collection_passages", "Passages per collection.", ["collection"], registry=r,
                              multiprocess_mode="mostrecent")
        self.runtime = Gauge("rag_runtime_info", "What runs the models (1 for the runtimes in use).",
                             ["reader", "embedder", "reader_model"], registry=r, multiprocess_mode="max")
        for outcome in ("answered", "abstained"):
            self.answers.labels(outcome)
        for verdict in ("right", "wrong"):
            self.feedback.labels(verdict)

    def answered(self, answer, timings: dict[str, float], seconds: float) -> None:
        """Count one question's outcome and times."""
        self.answers.labels("abstained" if answer.answer is None else "answered").inc()
        self.ask_seconds.observe(seconds)
        if "forward" in timings:
            self.forward_seconds.observe(timings["forward"])

    def render(self, collections, pipeline) -> bytes:
        """The text exposition, with the collections' counts and the runtimes as they are now."""
        self.documents.clear()  # a deleted collection leaves no gauge behind
        self.passages.clear()
        for name in collections.names():
            try:
                documents, passages = collections.get(name).counts()
            except RagError:  # deleted while scraped
                continue
            self.documents.labels(name).set(documents)
            self.passages.labels(name).set(passages)
        self.runtime.labels(pipeline.reader.runtime or "", pipeline.embedder.runtime or "",
                            str(pipeline.reader.model_name)).set(1)
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
