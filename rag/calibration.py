"""Answerability: the probability that the pipeline's best answer is right, from cheap features of the
reader's outputs over all retrieved passages (a logistic regression fitted on the development split)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FEATURES = (
    "span_score",  # start+end logit of the best span
    "margin",  # best span score minus the [CLS] score of its passage
    "margin_vs_min_null",  # best span score minus the lowest [CLS] score over all passages
    "answer_probability",  # softmax share of the answer text among all spans and no-answer scores
    "agreement",  # share of passages whose own best span is this answer text
    "passage_rank",  # 1 / (1 + retrieval rank of the passage the answer came from)
    "log_answer_chars",
)


@dataclass(frozen=True)
class Calibrator:
    """Logistic regression over standardised FEATURES; `threshold` is the probability below which to abstain."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float

    @classmethod
    def from_meta(cls, meta: dict) -> "Calibrator | None":
        params = meta.get("calibration")
        if not params:
            return None
        if tuple(params["features"]) != FEATURES:
            raise ValueError("the reader's calibration was fitted on other features; re-run `rag calibrate-reader`")
        return cls(*(tuple(params[k]) for k in ("mean", "scale", "coef")), params["intercept"], params["threshold"])

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


def fit_calibrator(features: np.ndarray, correct: np.ndarray, threshold: float = 0.5) -> Calibrator:
    """Fit the logistic regression (scikit-learn, needed only for training)."""
    from sklearn.linear_model import LogisticRegression

    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=1000).fit((features - mean) / scale, correct.astype(int))
    return Calibrator(tuple(mean), tuple(scale), tuple(model.coef_[0]), float(model.intercept_[0]), threshold)


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
