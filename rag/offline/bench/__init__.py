"""Benchmarks (`rag bench serve|backends|scale|stores|uploads|incremental|curve`): one module per benchmark,
and the harness they share (a real server in a child process, load, peak memory, the seed questions)."""
from rag.offline.bench.backends import STAGES, profile_stages, run_backend_benchmark
from rag.offline.bench.curve import run_learning_curve
from rag.offline.bench.harness import (
    FALLBACK_QUESTIONS,
    QUESTIONS_FILE,
    free_port,
    http_json,
    load_questions,
    passage_corpus,
    start_server,
    stop_server,
)
from rag.offline.bench.incremental import run_incremental_benchmark
from rag.offline.bench.scale import run_scale_benchmark
from rag.offline.bench.serve import run_benchmark
from rag.offline.bench.stores import run_store_benchmark
from rag.offline.bench.uploads import run_upload_benchmark

__all__ = ["FALLBACK_QUESTIONS", "QUESTIONS_FILE", "STAGES", "free_port", "http_json", "load_questions", "passage_corpus", "profile_stages",
           "run_backend_benchmark", "run_benchmark", "run_incremental_benchmark", "run_learning_curve",
           "run_scale_benchmark", "run_store_benchmark", "run_upload_benchmark", "start_server", "stop_server"]
