"""This CPU, read once from /proc/cpuinfo (the one parser): its model name and instruction-set flags, and
what they mean for the runtimes (int8 and bf16 dot products, the window-length bucket)."""
from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo; ("", empty) where there is none."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "", frozenset()
    field = {}
    for line in lines:
        key, _, value = line.partition(":")
        field.setdefault(key.strip(), value.strip())
    return field.get("model name", ""), frozenset(field.get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name, else the platform's description."""
    return _cpuinfo()[0] or platform.processor() or platform.machine()


#: CPU flags (as /proc/cpuinfo names them) of int8 dot-product instructions: with one, ONNX Runtime's int8
#: matrix products are exact over the full int8 range and several times faster than AVX2's.
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: CPU flags of a native bfloat16 dot product: where bf16 autocast is faster than fp32.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (empty where /proc/cpuinfo is not)."""
    return _cpuinfo()[1]


def has_int8_dot_product() -> bool:
    """Whether this CPU has VNNI or AMX (else int8 weights need the reduced range to avoid overflow)."""
    return bool(cpu_flags() & set(INT8_DOT_PRODUCT_FLAGS))


def length_bucket_for(runtime: str) -> int:
    """The window-length bucket a runtime reads best with (scripts/bucket_sizes.py; docs/runtimes.md):
    on the CPUs measured, torch costs the same for every length it meets, so padding is pure cost (1: none),
    and ONNX Runtime was fastest at 16. bf16 on AMX builds a kernel per shape, so it buckets to 32 (the
    reason for bucketing; not measured on such a CPU here)."""
    if runtime.startswith("onnxruntime"):
        return 16
    return 32 if runtime == "torch bf16" and "amx_bf16" in cpu_flags() else 1


def has_bf16_dot_product() -> bool:
    """Whether this CPU computes bfloat16 products natively (AMX or AVX512-BF16)."""
    return bool(cpu_flags() & set(BF16_FLAGS))


#: The flags benchmarks name beside their numbers.
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def flags_summary() -> str:
    """The int8/bf16-relevant instruction sets this CPU has, in words (what benchmarks print beside numbers)."""
    flags = cpu_flags()
    if not flags:
        return "CPU flags unknown"
    return "CPU has " + (", ".join(f for f in REPORTED_FLAGS if f in flags) or "none of avx2/avx512/vnni")
