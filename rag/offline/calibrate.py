"""Fit the reader's answerability calibration (`rag calibrate-reader`): the answer-or-abstain model of
rag.pipeline.calibration, fitted on the dev articles read open-domain, and its threshold, recorded in the reader's
metadata with the threshold sweep, the reliability table and the dev metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rag.config import Settings
from rag.offline.squad import (
    DEV_TITLES,
    TEST_TITLES,
    Question,
    dev_questions,
    gold_passage,
    is_right,
    load_squad,
    score_prediction,
    squad2_metrics,
    squad_corpus,
)
from rag.reader.folder import load_reader_meta, write_reader_meta
from rag.reader.model import Reader


def calibrate_reader(train_file: Path, model_dir: Path, min_no_answer_accuracy: float = 0.0,
                     embedder=None, reader: Reader | None = None, f1_tolerance: float | None = None,
                     extra_file: Path | None = None, limit: int = 0, removed_share: float | None = None) -> dict:
    """Fit the answerability model on the dev articles read open-domain (retrieved passages over all dev
    paragraphs, as in deployment) and choose its threshold (rag.pipeline.calibration); record it, the threshold
    sweep, the reliability table and the metrics (open-domain and gold paragraph) in the metadata. With
    `extra_file`, the extra questions the reader's lineage never trained on join the set, read against their
    own sources, a `removed_share` of them (default: the dev split's share of unanswerable questions) with
    their answer taken away (rag.offline.calibration_set). Every read is stored beside the weights for the
    feedback refit. A loaded embedder and reader (training's) are reused."""
    from tqdm import tqdm

    from rag.pipeline.calibration import fit_with_threshold
    from rag.pipeline.qa import Pipeline
    from rag.store.embedding import Embedder
    from rag.store.files.index import memory_index

    settings = Settings(reader_model=str(model_dir)).with_overrides(threshold_f1_tolerance=f1_tolerance)
    dev = dev_questions(load_squad(train_file), limit)
    embedder = embedder or Embedder.from_settings(settings)
    index = memory_index(squad_corpus(dev), embedder, settings, progress=True)
    pipeline = Pipeline.from_settings(settings, index=index, embedder=embedder, reader=reader, calibrated=False)

    rows = {"open": [], "gold": []}
    for q in tqdm(dev, desc="calibration (dev)", unit="question"):
        rows["open"].append(pipeline.judge(q.question, pipeline.retriever.run(q.question)))
        rows["gold"].append(pipeline.judge(q.question, [gold_passage(q)]))

    held, rows["heldout"] = [], []
    if extra_file is not None:
        from rag.offline.calibration_set import heldout_extra, read_heldout
        from rag.offline.training.lineage import lineage_of

        train_qs = [q for q in load_squad(train_file) if q.title not in DEV_TITLES | TEST_TITLES]
        held = heldout_extra(Path(extra_file), lineage_of(model_dir), sum(1 for q in train_qs if q.answers))
        if removed_share is None:
            removed_share = sum(1 for q in dev if not q.answers) / len(dev)
        held, rows["heldout"] = read_heldout(held, Path(extra_file), settings, embedder, pipeline.reader,
                                             removed_share)
    every, every_rows = dev + held, rows["open"] + rows["heldout"]
    x_open, y_open = _labelled(every, every_rows)
    # The operating point: the best open-domain F1 over the whole set (or the highest threshold within
    # threshold_f1_tolerance of it), above a floor on no-answer accuracy when one is asked for.
    calibrator, sweep = fit_with_threshold(
        np.array(x_open), np.array(y_open), lambda c, t: squad2_metrics(every, _predictions(c, every_rows, t)),
        min_no_answer_accuracy, settings.threshold_f1_tolerance)
    report = _report(dev, rows, calibrator, sweep, y_open, len(index.chunks), min_no_answer_accuracy,
                     settings.threshold_f1_tolerance, held)
    if held:
        report["calibration_set"]["heldout_removed_share"] = round(removed_share, 4)
    _save_reads(model_dir, every, every_rows)
    meta = load_reader_meta(model_dir)
    meta["calibration"] = calibrator.to_meta()
    meta["calibration_report"] = report
    meta["calibrate_command"] = (f"rag calibrate-reader --train {train_file} --model {model_dir}"
                                 + (f" --extra {extra_file} --removed-share {removed_share:.4f}" if extra_file is not None else "")
                                 + (f" --f1-tolerance {settings.threshold_f1_tolerance}" if settings.threshold_f1_tolerance else ""))
    if meta.get("lineage"):  # this run's entry records its open-domain dev F1 too
        meta["lineage"][-1].setdefault("dev", {})["open_domain_f1_at_threshold"] = round(report["open_domain"]["at_threshold"]["f1"], 2)
    write_reader_meta(model_dir, meta)
    return meta


def _save_reads(model_dir: Path, questions: list[Question], judgements) -> None:
    """Every read the decision was fitted on, beside the weights (calibration_reads.json): what a team's
    `--feedback` refit starts from, so that it starts from the set that chose the shipped threshold."""
    from rag.offline.feedback_calibration import READS_FILE, Reads

    Reads(questions, [j.features if j.best is not None else None for j in judgements],
          [j.best.text if j.best is not None else None for j in judgements]).save(Path(model_dir) / READS_FILE)


def _labelled(questions: list[Question], judgements) -> tuple[list, list[bool]]:
    """The features of every best answer and whether it is right: the calibrator's training data."""
    xs, ys = [], []
    for q, j in zip(questions, judgements):
        if j.best is not None:
            xs.append(j.features)
            ys.append(is_right(score_prediction(j.best.text, q.answers)[1]))
    return xs, ys


def _predictions(calibrator, judgements, threshold: float) -> list[str | None]:
    """Each best answer whose probability reaches `threshold`; None (abstain) for the others."""
    out = []
    for j in judgements:
        p = float(calibrator.probability(j.features)[0]) if j.best is not None else 0.0
        out.append(j.best.text if j.best is not None and p >= threshold else None)
    return out


def _report(dev: list[Question], rows: dict, calibrator, sweep, y_open: list[bool], passages: int,
            min_no_answer_accuracy: float, f1_tolerance: float, held: list[Question]) -> dict:
    """The calibration report of reader_meta.json: the threshold and its rule, the sweep, the metrics at the
    threshold and forced to answer (open-domain over `passages` and gold paragraph), the reliability table;
    with held-out extra questions, their metrics, the whole set's, and both threshold rules on each."""
    from rag.pipeline.calibration import choose_threshold, reliability_table

    best_t = calibrator.threshold
    every, every_rows = dev + held, rows["open"] + rows["heldout"]
    probs_open = [float(calibrator.probability(j.features)[0]) if j.best else 0.0 for j in every_rows]
    answerable = [q for q in dev if q.answers]
    forced = lambda js: squad2_metrics(answerable, [j.best.text if j.best else "" for q, j in zip(dev, js) if q.answers])  # noqa: E731
    sets = {"dev": (dev, rows["open"])}
    if held:
        sets |= {"heldout_extra": (held, rows["heldout"]), "whole_set": (every, every_rows)}
    rules = {}
    for name, tolerance in (("max_f1", 0.0), ("cautious_0.5_f1", 0.5)):
        t, _ = choose_threshold(lambda t: squad2_metrics(every, _predictions(calibrator, every_rows, t)),
                                min_no_answer_accuracy, tolerance)
        rules[name] = {"threshold": t, **{k: squad2_metrics(qs, _predictions(calibrator, js, t)) for k, (qs, js) in sets.items()}}
    return {
        "threshold": best_t,
        "calibration_set": {"dev_questions": len(dev), "heldout_extra_questions": len(held),
                            "heldout_answer_removed": sum(1 for q in held if not q.answers),
                            "heldout_sources": sorted({q.title.split(":")[0] for q in held})},
        "rules": rules,
        "threshold_rule": (f"max open-domain F1 over the calibration set with no-answer accuracy >= {min_no_answer_accuracy}%"
                           + (f", then the highest threshold within {f1_tolerance} F1 of it" if f1_tolerance else "")),
        "sweep_open_domain": [{"threshold": t, **{k: round(v, 1) for k, v in m.items() if k != "n"}}
                              for t, m in sweep if round(t * 100) % 5 == 0],
        "open_domain": {"passages": passages,
                        "at_threshold": squad2_metrics(dev, _predictions(calibrator, rows["open"], best_t)),
                        "forced_answer": forced(rows["open"])},
        "gold_paragraph": {"at_threshold": squad2_metrics(dev, _predictions(calibrator, rows["gold"], best_t)),
                           "forced_answer": forced(rows["gold"])},
        "reliability_open_domain": reliability_table(
            np.array([p for p, j in zip(probs_open, every_rows) if j.best]), np.array(y_open, dtype=float)),
    }
