"""Which runtime runs the reader on this CPU (`reader_backend="auto"` in `rag serve`): the candidates its
flags allow (torch with bf16 autocast where the CPU has AMX or AVX512-BF16; torch fp32; the fp32 ONNX
export through ONNX Runtime), each timed on the same windows, the fastest one kept whose answers agree with
fp32's. Measured once per machine and cached by CPU model, flags, runtime versions, reader weights and
window shape, so later starts only read the record (`/health` and `rag bench backends` show it and why)."""
from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from rag.runtime.cpu import BF16_FLAGS, INT8_DOT_PRODUCT_FLAGS, cpu_flags, cpu_model
from rag.runtime.onnx import cache_dir, fingerprint

log = logging.getLogger(__name__)

#: The probe read to time each runtime: five passages of the length the pipeline reads (top_k chunks).
PROBE_QUESTION = "When did the harbour board approve the new slipway for the lifeboat?"
PROBE_PASSAGE = ("The harbour board of the island met four times during the year, as its rules require. Its chair, "
                 "a former ferry captain, opened each meeting with the accounts. In March the board approved a new "
                 "slipway for the lifeboat, to be built by a firm from the mainland before the winter storms. The "
                 "breakwater was repaired in May at a cost of 412,000 euro, and the harbour master inspected it. ")
REPEATS = 5
#: Bumped when the probe, the candidates or the rule change, so records measured the old way are not reused.
MEASUREMENT = 2


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime chosen for a reader on this machine, why, and what each candidate measured (ms)."""

    backend: str  # a READER_BACKENDS value: torch-bf16, torch or onnx-fp32
    why: str
    forward_ms: dict[str, float]
    cpu: str


def candidates(has_export: bool, flags: set[str] | None = None) -> list[str]:
    """The runtimes worth timing here: bf16 only where the CPU computes it natively."""
    flags = cpu_flags() if flags is None else flags
    out = ["torch"]
    if flags & set(BF16_FLAGS):
        out.append("torch-bf16")
    if has_export:
        out.append("onnx-fp32")
    return out


def choose(forward_ms: dict[str, float], agrees: dict[str, bool]) -> tuple[str, str]:
    """The fastest candidate whose answers agree with fp32 torch's on the probe, and why in words."""
    usable = {name: ms for name, ms in forward_ms.items() if agrees.get(name, True)}
    best = min(usable, key=usable.get)
    others = ", ".join(f"{n} {ms:.0f} ms" for n, ms in sorted(forward_ms.items(), key=lambda kv: kv[1]) if n != best)
    rejected = [n for n in forward_ms if not agrees.get(n, True)]
    why = f"fastest on this CPU: {best} {forward_ms[best]:.0f} ms a forward pass of 5 passages (others: {others})"
    if rejected:
        why += f"; {', '.join(rejected)} left out: its spans differ from fp32's on the probe"
    return best, why


def cache_key(folder: str | Path, reader) -> str:
    """What a measurement of `reader` (weights in `folder`) depends on: CPU, flags that matter, runtime
    versions, weights, window shape (length and bucket), threads, and how it is measured."""
    versions = {}
    for package in ("torch", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    relevant = sorted(cpu_flags() & set(BF16_FLAGS + INT8_DOT_PRODUCT_FLAGS + ("avx2", "avx512f")))
    raw = json.dumps([MEASUREMENT, cpu_model(), relevant, versions, fingerprint(folder),
                      reader.max_seq_length, reader.length_bucket, reader.threads])
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def _record(key: str) -> Path:
    return cache_dir() / "runtime" / f"reader-{key}.json"


def cached_choice(folder: str | Path, reader) -> RuntimeChoice | None:
    """The record measured for this reader's weights and settings on this machine, if there is one."""
    path = _record(cache_key(folder, reader))
    try:
        return RuntimeChoice(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def measure(reader, has_export: bool) -> RuntimeChoice:
    """Time every candidate on the probe with `reader`'s tokenizer and settings (loading each runtime in
    turn), check bf16's spans against fp32's, choose, and cache the record."""
    folder = reader.resolved_path()
    timings: dict[str, float] = {}
    spans: dict[str, list] = {}
    for backend in candidates(has_export):
        probe = reader.with_backend(backend)
        probe.warm_up()
        encoding = probe.encode([PROBE_QUESTION] * 5, [PROBE_PASSAGE * (i % 2 + 1) for i in range(5)])
        runs = []
        for i in range(REPEATS + 2):
            started = time.perf_counter()
            start, end = probe.logits(encoding)
            if i >= 2:  # the first two build kernels and caches
                runs.append(1000 * (time.perf_counter() - started))
        timings[backend] = round(statistics.median(runs), 1)
        spans[backend] = [(int(np.argmax(s)), int(np.argmax(e))) for s, e in zip(start, end)]
    agrees = {name: spans[name] == spans["torch"] for name in spans}
    backend, why = choose(timings, agrees)
    choice = RuntimeChoice(backend, why, timings, cpu_model())
    path = _record(cache_key(folder, reader))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(choice), indent=1), encoding="utf-8")
    tmp.replace(path)
    log.info("reader runtime for this CPU (%s): %s", choice.cpu, why)
    return choice
