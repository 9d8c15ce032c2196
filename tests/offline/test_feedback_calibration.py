"""The feedback refit on hand-made reads: a team whose answers are right where the packaged reads say
they are wrong moves the decision towards the team, the weight is cross-validated by document, the
threshold comes from the weighted F1, and the given reader folder is never written."""
import numpy as np
import pytest

from rag.offline.feedback_calibration import FeedbackCalibrationError, Reads, choose_weight, fit_weighted, outcome, write_reader
from rag.offline.squad import Question


def _reads(n: int, right_when_high: bool, title: str, seed: int) -> Reads:
    """n questions whose best answer has one informative feature (the margin); right when it is high (or
    when it is low, for a team whose documents behave the other way)."""
    rng = np.random.default_rng(seed)
    questions, features, best = [], [], []
    for i in range(n):
        margin = float(rng.normal())
        right = (margin > 0) == right_when_high
        questions.append(Question(f"{title}-{i}", title, i % 10, "ctx", f"q{i}?", ("gold",), (0,)))
        features.append(np.array([margin, margin, margin, 0.5, 0.5, 0.5, 1.0]) + rng.normal(0, 0.01, 7))
        best.append("gold" if right else "other")
    return Reads(questions, features, best)


def test_the_team_reads_move_the_decision_and_the_weight_is_cross_validated():
    base = _reads(300, right_when_high=True, title="packaged", seed=1)
    team = _reads(120, right_when_high=False, title="team", seed=2)
    held = _reads(120, right_when_high=False, title="team", seed=3)
    weight, table = choose_weight(base, team)
    assert [row["weight"] for row in table] == [1.0, 2.0, 5.0, 10.0, 20.0, 50.0]
    losses = {row["weight"]: row["held_out_log_loss"] for row in table}
    assert weight == min(losses, key=losses.get) and weight >= 5  # the team's own reads must count more
    before = outcome(fit_weighted(base, team, 1e-6), held)  # ~ the packaged reads alone
    after = outcome(fit_weighted(base, team, weight), held)
    assert after["wrong"] < before["wrong"] and after["f1"] > before["f1"]


def test_one_kind_of_answer_only_is_a_clear_error():
    only_right = _reads(20, right_when_high=True, title="a", seed=4)
    only_right.best = ["gold"] * 20
    with pytest.raises(FeedbackCalibrationError, match="only right or only wrong"):
        fit_weighted(only_right, only_right.subset([]), 5.0)


def test_the_given_reader_is_never_written(tmp_path):
    from rag.pipeline.calibration import Calibrator

    reader = tmp_path / "reader"
    reader.mkdir()
    (reader / "reader_meta.json").write_text("{}")
    calibrator = Calibrator((0.0,) * 7, (1.0,) * 7, (0.1,) * 7, 0.0, 0.4)
    with pytest.raises(ValueError, match="never changed in place"):
        write_reader(reader, reader, calibrator, {})
    write_reader(reader, tmp_path / "out", calibrator, {"weight": 5.0})
    import json

    meta = json.loads((tmp_path / "out" / "reader_meta.json").read_text())
    assert meta["calibration"]["threshold"] == 0.4 and meta["feedback_calibration"] == {"weight": 5.0}
    assert json.loads((reader / "reader_meta.json").read_text()) == {}
