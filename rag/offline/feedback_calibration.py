"""Refit the answer-or-abstain decision on a team's own verdicts (`rag calibrate-reader --feedback`): the
calibration reads of the reader (its dev articles read open-domain) plus the team's labelled questions read
open-domain over their own documents, the team's weighted so that a few dozen count without overfitting.
The weight is chosen by cross-validation over the team's documents (held-out log-loss), the threshold by
the weighted F1 sweep. The result goes to a new reader folder; the given one is never changed."""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rag.errors import RagError
from rag.offline.squad import Question, is_right, score_prediction
from rag.pipeline.calibration import FEATURES, Calibrator, choose_threshold, fit_calibrator


class FeedbackCalibrationError(RagError):
    """The reads cannot be fitted (one kind of answer only)."""


#: The reader's calibration reads, shipped beside its weights (the base every team's refit starts from).
READS_FILE = "calibration_reads.json"
#: The weights tried for the team's reads (a team read counts as this many packaged ones).
WEIGHTS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


@dataclass
class Reads:
    """Questions read open-domain: the best answer's features and text (None when there was none)."""

    questions: list[Question]
    features: list[np.ndarray | None]
    best: list[str | None]

    def labelled(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(features, right, question index) of the questions that got a best answer."""
        rows = [i for i, f in enumerate(self.features) if f is not None]
        x = np.array([self.features[i] for i in rows]) if rows else np.zeros((0, 7))
        y = np.array([is_right(score_prediction(self.best[i], self.questions[i].answers)[1]) for i in rows])
        return x, y, rows

    def subset(self, keep: list[int]) -> Reads:
        return Reads([self.questions[i] for i in keep], [self.features[i] for i in keep], [self.best[i] for i in keep])

    def save(self, path: Path) -> None:
        """As JSON (no pickle): per question its id, text, gold answers, and the best answer's features."""
        rows = [{"id": q.id, "title": q.title, "paragraph": q.paragraph, "question": q.question, "answers": list(q.answers),
                 "best": b, "features": None if f is None else [round(float(v), 6) for v in f]}
                for q, f, b in zip(self.questions, self.features, self.best)]
        path.write_text(json.dumps({"features": list(FEATURES), "reads": rows}), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Reads:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if tuple(raw["features"]) != FEATURES:
                raise ValueError("they were made with other calibration features")
            rows = raw["reads"]
            questions = [Question(r["id"], r["title"], int(r["paragraph"]), "", r["question"], tuple(r["answers"]), ())
                         for r in rows]
            features = [None if r["features"] is None else np.array(r["features"], dtype=float) for r in rows]
            return cls(questions, features, [r["best"] for r in rows])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise FeedbackCalibrationError(f"the calibration reads {path} cannot be used ({err})") from None


def read_open_domain(questions: list[Question], settings, embedder, reader) -> Reads:
    """Every question read over the retrieved passages of all the questions' paragraphs, as deployed."""
    from tqdm import tqdm

    from rag.offline.squad import squad_corpus
    from rag.pipeline.qa import Pipeline
    from rag.store.files.index import memory_index

    index = memory_index(squad_corpus(questions), embedder, settings)
    pipeline = Pipeline.from_settings(settings, index=index, embedder=embedder, reader=reader, calibrated=False)
    features, best = [], []
    for q in tqdm(questions, desc="reading", unit="question"):
        judgement = pipeline.judge(q.question, pipeline.retriever.run(q.question))
        features.append(judgement.features if judgement.best is not None else None)
        best.append(judgement.best.text if judgement.best is not None else None)
    return Reads(questions, features, best)


def predictions(calibrator: Calibrator, reads: Reads, threshold: float | None = None) -> list[str | None]:
    t = calibrator.threshold if threshold is None else threshold
    return [b if f is not None and float(calibrator.probability(f)[0]) >= t else None
            for f, b in zip(reads.features, reads.best)]


def outcome(calibrator: Calibrator, reads: Reads) -> dict:
    """F1, no-answer accuracy and the wrong answers (given with F1 < 0.5) of a decision on some reads."""
    preds = predictions(calibrator, reads)
    f1s = [score_prediction(p, q.answers)[1] for p, q in zip(preds, reads.questions)]
    unanswerable = [p is None for p, q in zip(preds, reads.questions) if not q.answers]
    return {"n": len(preds), "f1": 100 * sum(f1s) / max(len(f1s), 1),
            "no_answer_accuracy": 100 * sum(unanswerable) / max(len(unanswerable), 1),
            "wrong": sum(p is not None and not is_right(f) for p, f in zip(preds, f1s))}


def fit_weighted(base: Reads, team: Reads, weight: float, threshold: bool = True) -> Calibrator:
    """The calibrator fitted on both reads (the team's at `weight`), its threshold from the weighted F1
    (left at 0.5 without `threshold`: cross-validation scores probabilities only)."""
    xb, yb, _ = base.labelled()
    xt, yt, _ = team.labelled()
    x = np.vstack([xb, xt]) if len(xt) else xb
    y = np.concatenate([yb, yt]) if len(yt) else yb
    w = np.concatenate([np.ones(len(yb)), np.full(len(yt), weight)])
    if len(set(y.tolist())) < 2:
        raise FeedbackCalibrationError("the reads hold only right or only wrong answers: there is nothing to fit")
    calibrator = fit_calibrator(x, y, weights=w)
    if not threshold:
        return calibrator
    # Per read: its probability, its F1 if answered and if abstained; the sweep is then arithmetic.
    probability, answered, abstained, weights = [], [], [], []
    for reads, wt in ((base, 1.0), (team, weight)):
        for f, b, q in zip(reads.features, reads.best, reads.questions):
            probability.append(float(calibrator.probability(f)[0]) if f is not None else -1.0)
            answered.append(score_prediction(b, q.answers)[1] if f is not None else 0.0)
            abstained.append(0.0 if q.answers else 1.0)
            weights.append(wt)
    p, a, n, wts = map(np.array, (probability, answered, abstained, weights))

    def weighted_f1(t: float) -> dict:
        return {"f1": 100 * float(np.sum(wts * np.where(p >= t, a, n)) / np.sum(wts)), "no_answer_accuracy": 100.0}

    chosen, _ = choose_threshold(weighted_f1)
    return replace(calibrator, threshold=chosen)


def document_of(q: Question) -> tuple[str, int]:
    """The document a question was asked about (a SQuAD paragraph is one document of the corpus)."""
    return q.title, q.paragraph


def choose_weight(base: Reads, team: Reads, folds: int = 5) -> tuple[float, list[dict]]:
    """The team weight with the lowest held-out log-loss on the team's reads, folds split by document (a
    document's questions are never on both sides)."""
    documents = sorted({document_of(q) for q in team.questions})
    table = []
    for weight in WEIGHTS:
        losses = []
        for k in range(min(folds, len(documents))):
            held = set(documents[k::folds])
            train = [i for i, q in enumerate(team.questions) if document_of(q) not in held]
            test = team.subset([i for i, q in enumerate(team.questions) if document_of(q) in held])
            calibrator = fit_weighted(base, team.subset(train), weight, threshold=False)
            x, y, _ = test.labelled()
            if len(y):
                p = np.clip(calibrator.probability(x), 1e-6, 1 - 1e-6)
                losses.append(float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))))
        table.append({"weight": weight, "held_out_log_loss": round(float(np.mean(losses)), 4) if losses else math.nan})
    valid = [row for row in table if not math.isnan(row["held_out_log_loss"])]
    return (min(valid, key=lambda r: r["held_out_log_loss"])["weight"] if valid else 1.0), table


def write_reader(model_dir: Path, output: Path, calibrator: Calibrator, report: dict) -> None:
    """A copy of the reader folder with the refitted calibration; never the given folder itself."""
    from rag.reader.folder import load_reader_meta, write_reader_meta

    if output.resolve() == Path(model_dir).resolve():
        raise ValueError("--output must be a new folder: the reader given is never changed in place")
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"{output} exists and is not empty: choose a new folder")
    shutil.copytree(model_dir, output, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint", "*.onnx"))
    meta = load_reader_meta(output)
    meta["calibration"] = calibrator.to_meta()
    meta["feedback_calibration"] = report
    write_reader_meta(output, meta)
