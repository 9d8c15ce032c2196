"""A reader's lineage: every training run that led to it (read from its metadata, or rebuilt for readers
from before lineages were recorded), its totals, and the table `rag lineage` prints."""
from __future__ import annotations

from pathlib import Path

from rag.config import PACKAGED_EMBEDDER, REPO_DIR
from rag.errors import RagError
from rag.reader.folder import load_reader_meta

CPU_NOTE = ("trained on the CPU named in hardware, without a GPU: a run shortened to fit (see config); "
            "docs/reader.md names the longer run to make on a GPU")


class TrainingError(RagError):
    """A training run cannot start or resume as asked."""


def lineage_of(model_dir: Path, _depth: int = 0) -> list[dict]:
    """Every run that led to the reader in `model_dir`, oldest first. Readers from before lineages were
    recorded get one entry built from their metadata, after their base reader's lineage when the base
    was a reader folder (`--base-model rag/models/reader`, as for v3)."""
    meta = load_reader_meta(model_dir)
    if not meta:
        return []
    if "lineage" in meta:
        return meta["lineage"]
    config = meta.get("config", {})
    earlier: list[dict] = []
    base = config.get("base_model")
    if base and base != PACKAGED_EMBEDDER and _depth < 10:
        for candidate in (Path(base), REPO_DIR / base):
            base_meta = load_reader_meta(candidate)
            if not base_meta:
                continue
            if base_meta.get("train_command") == meta.get("train_command"):
                # The base folder now holds this very reader (it was shipped there): its recorded lineage,
                # if it has one, is this reader's.
                if "lineage" in base_meta:
                    return base_meta["lineage"]
                break
            earlier = lineage_of(candidate, _depth + 1)
            break
    return earlier + [_recorded_run(meta)]


def _recorded_run(meta: dict) -> dict:
    """The lineage entry of a reader from before lineages were recorded, from its metadata."""
    config = meta.get("config", {})
    base = config.get("base_model")
    report = meta.get("calibration_report", {})
    extra = config.get("extra_questions", 0) if config.get("extra_file") else 0
    return {
        "command": meta.get("train_command"),
        "output": config.get("output"),
        "init": base if base != PACKAGED_EMBEDDER else None,
        "mix": meta.get("data", {}).get("mix"),
        "windows": meta.get("data", {}).get("windows"),
        "epochs": config.get("epochs"),
        "learning_rate": config.get("learning_rate"),
        "steps": meta.get("steps"),
        "train_seconds": meta.get("train_seconds"),
        "hardware": meta.get("hardware"),
        "extra_draw": {"rng": "shared", "seed": config.get("seed"), "sources": config.get("extra_sources", []),
                       "extra_sha256": meta.get("data", {}).get("extra_sha256"),
                       "questions": extra, "negative_fraction": config.get("negative_fraction", 0), "fresh": False},
        "dev": {"gold_forced_f1": round(meta.get("dev_gold_paragraph", {}).get("forced_answer", {}).get("f1", 0), 2),
                "open_domain_f1_at_threshold": round(report.get("open_domain", {}).get("at_threshold", {}).get("f1", 0), 2)},
    }


def lineage_totals(lineage: list[dict]) -> dict:
    """Training windows seen (windows x epochs) and steps, over every run of a lineage."""
    return {
        "runs": len(lineage),
        "windows_seen": int(sum((r.get("windows") or 0) * (r.get("epochs") or 0) for r in lineage)),
        "steps": int(sum(r.get("steps") or 0 for r in lineage)),
        "train_seconds": round(sum(r.get("train_seconds") or 0 for r in lineage), 1),
    }


def lineage_table(model_dir: Path) -> str:
    """The reader's lineage as a Markdown table: each run, the windows it trained on, the windows seen so far
    (windows x epochs, summed), its steps and CPU/GPU time, and its dev F1s (gold paragraph forced; open
    domain at its threshold): the learning curve of cumulative training."""
    lineage = lineage_of(Path(model_dir))
    if not lineage:
        raise TrainingError(f"{model_dir} has no reader metadata to read a lineage from")
    lines = ["| run | init | windows | windows seen (cumulative) | steps | minutes | dev gold ¶ forced F1 | dev open-domain F1 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    seen = 0.0
    for run in lineage:
        seen += (run.get("windows") or 0) * (run.get("epochs") or 0)
        dev = run.get("dev") or {}
        f = lambda v: "–" if v in (None, 0) else f"{v:.1f}"  # noqa: E731
        lines.append(f"| {run.get('output') or '?'} | {run.get('init') or '(encoder)'} | {run.get('windows') or 0:,} | "
                     f"{int(seen):,} | {run.get('steps') or 0:,} | {(run.get('train_seconds') or 0) / 60:.0f} | "
                     f"{f(dev.get('gold_forced_f1'))} | {f(dev.get('open_domain_f1_at_threshold'))} |")
    return "\n".join(lines)


def hardware() -> str:
    """The GPU a run trains on, or the CPU with its core and torch thread counts."""
    import os
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
