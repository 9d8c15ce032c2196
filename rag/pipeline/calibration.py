"""Answerability: the probability that the pipeline's best answer is right, from cheap features of the
reader's outputs over all retrieved passages (a logistic regression fitted on the development split).

Everything about it lives here: the features (names and computation), the fit, and the choice of the
abstention threshold; the pipeline only calls answer_features and Calibrator.probability."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from rag.errors import RagError
from rag.text import normalize_answer

FEATURES = (
    "span_score",  # start+end logit of the best span
    "margin",  # best span score minus the [CLS] score of its passage
    "margin_vs_min_null",  # best span score minus the lowest [CLS] score over all passages
    "answer_probability",  # softmax share of the answer text among all spans and no-answer scores
    "agreement",  # share of passages whose own best span is this answer text
    "passage_rank",  # 1 / (1 + retrieval rank of the passage the answer came from)
    "log_answer_chars",
)


class CalibrationError(RagError):
    """The reader's calibration cannot be used as stored."""


def answer_features(best, candidates, readings, passages) -> np.ndarray:
    """The FEATURES of the best candidate answer (pipeline.Candidate) given every candidate, the reader's
    ContextReadings of the passages, and the passages themselves (for their retrieval rank)."""
    passage = best.places[0][0]
    nulls = [r.null_score for r in readings]
    everything = [s for c in candidates for s in c.span_scores] + nulls
    top_keys = [normalize_answer(r.spans[0].text) if r.spans else "" for r in readings]
    return np.array([
        best.score,
        best.score - readings[passage].null_score,
        best.score - min(nulls),
        softmax_share(best.span_scores, everything),
        sum(k == best.key for k in top_keys) / len(readings),
        1.0 / (1.0 + passages[passage].rank),
        math.log(1 + len(best.text)),
    ])


@dataclass(frozen=True)
class Calibrator:
    """Logistic regression over standardised FEATURES; `threshold` is the probability below which to abstain."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float

    @classmethod
    def from_meta(cls, meta: dict) -> Calibrator | None:
        params = meta.get("calibration")
        if not params:
            return None
        try:
            if tuple(params["features"]) != FEATURES:
                raise CalibrationError("the reader's calibration was fitted on other features; re-run `rag calibrate-reader`")
            return cls(*(tuple(float(v) for v in params[k]) for k in ("mean", "scale", "coef")),
                       float(params["intercept"]), float(params["threshold"]))
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(f"the reader's calibration is damaged ({err!r}); re-run `rag calibrate-reader`") from None

    def to_meta(self) -> dict:
        return {
            "features": list(FEATURES),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "threshold": self.threshold,
        }

    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(answer is right) for rows of features."""
        z = ((np.atleast_2d(features) - np.array(self.mean)) / np.array(self.scale)) @ np.array(self.coef)
        return 1.0 / (1.0 + np.exp(-(z + self.intercept)))


def uncalibrated_probability(features: np.ndarray, null_margin: float) -> np.ndarray:
    """Fallback for a reader without calibration: a logistic of the answer-vs-no-answer margin."""
    margin = np.atleast_2d(features)[:, FEATURES.index("margin")]
    return 1.0 / (1.0 + np.exp(-(margin - null_margin)))


def fit_calibrator(features: np.ndarray, correct: np.ndarray, threshold: float = 0.5,
                   weights: np.ndarray | None = None) -> Calibrator:
    """Fit the logistic regression (scikit-learn, needed only for training); `weights` weigh the reads
    (a team's own verdicts count more than the packaged reads: rag.offline.feedback_calibration)."""
    from sklearn.linear_model import LogisticRegression

    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    if len(set(correct.astype(int).tolist())) < 2:
        # Every read right, or (a random or foreign model) every one wrong: nothing to tell apart, so the
        # probability is the observed rate (with one imagined read of each kind), the same for every answer.
        rate = (float(correct.sum()) + 1) / (len(correct) + 2)
        return Calibrator(tuple(mean), tuple(scale), (0.0,) * len(mean), math.log(rate / (1 - rate)), threshold)
    model = LogisticRegression(C=1.0, max_iter=1000).fit((features - mean) / scale, correct.astype(int),
                                                          sample_weight=weights)
    return Calibrator(tuple(mean), tuple(scale), tuple(model.coef_[0]), float(model.intercept_[0]), threshold)


def choose_threshold(evaluate: Callable[[float], dict], min_no_answer_accuracy: float = 0.0,
                     f1_tolerance: float = 0.0,
                     thresholds: np.ndarray | None = None) -> tuple[float, list[tuple[float, dict]]]:
    """The abstention threshold from `evaluate(threshold)` (SQuAD 2.0 metrics in percent): among thresholds
    whose no-answer accuracy reaches the floor (all of them if none does), the highest one whose F1 is within
    `f1_tolerance` points of the best (0: the best F1 itself); and the sweep."""
    grid = np.arange(0.05, 0.951, 0.01) if thresholds is None else thresholds
    sweep = [(float(round(t, 2)), evaluate(float(round(t, 2)))) for t in grid]
    allowed = [(t, m) for t, m in sweep if m["no_answer_accuracy"] >= min_no_answer_accuracy] or sweep
    best = max(m["f1"] for _, m in allowed)
    return max(t for t, m in allowed if m["f1"] >= best - f1_tolerance), sweep


def fit_with_threshold(features: np.ndarray, correct: np.ndarray, judged: Callable[[Calibrator, float], dict],
                       min_no_answer_accuracy: float = 0.0,
                       f1_tolerance: float = 0.0) -> tuple[Calibrator, list[tuple[float, dict]]]:
    """Fit the calibrator, then choose its threshold with `judged(calibrator, threshold)` -> metrics."""
    calibrator = fit_calibrator(features, correct)
    threshold, sweep = choose_threshold(lambda t: judged(calibrator, t), min_no_answer_accuracy, f1_tolerance)
    return replace(calibrator, threshold=threshold), sweep


def reliability_table(probabilities: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict]:
    """Predicted vs observed accuracy in equal-width probability bins."""
    rows = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        mask = (probabilities >= lo) & ((probabilities < hi) if b < bins - 1 else (probabilities <= hi))
        if mask.any():
            rows.append({
                "bin": f"{lo:.1f}-{hi:.1f}",
                "n": int(mask.sum()),
                "predicted": round(float(probabilities[mask].mean()), 3),
                "observed": round(float(correct[mask].mean()), 3),
            })
    return rows


def softmax_share(selected: list[float], everything: list[float]) -> float:
    """exp-sum of `selected` over exp-sum of `everything`, computed stably."""
    top = max(everything)
    total = sum(math.exp(s - top) for s in everything)
    return sum(math.exp(s - top) for s in selected) / total
