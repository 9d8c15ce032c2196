"""Offline tools, apart from serving: SQuAD data and metrics, evaluation, training, the benchmark.

Only the CLI imports from here; nothing the server or the pipeline runs does."""
