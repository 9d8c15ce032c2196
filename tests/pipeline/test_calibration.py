"""The decision's calibration: the reliability table and the softmax share on hand-made scores, and a reader
without a fitted calibration that says so in every answer, on /health and in the CLI's output."""
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rag.config import PACKAGED_READER_DIR
from rag.pipeline.calibration import reliability_table, softmax_share
from rag.pipeline.qa import Pipeline
from rag.service.server import create_app


def test_reliability_table_bins():
    probs = np.array([0.05, 0.15, 0.95, 0.92])
    correct = np.array([0.0, 0.0, 1.0, 0.0])
    rows = reliability_table(probs, correct)
    assert [r["bin"] for r in rows] == ["0.0-0.1", "0.1-0.2", "0.9-1.0"]
    assert rows[-1]["n"] == 2 and rows[-1]["observed"] == 0.5


def test_softmax_share():
    assert softmax_share([0.0], [0.0, 0.0]) == pytest.approx(0.5)
    assert softmax_share([1000.0], [1000.0, 0.0]) == pytest.approx(1.0)


def test_an_uncalibrated_reader_says_so_everywhere(tmp_path, settings, seed_index, embedder):
    from rag.reader.folder import META_FILE

    folder = tmp_path / "reader"
    folder.mkdir()
    for f in PACKAGED_READER_DIR.iterdir():
        if f.is_file() and f.name != META_FILE:
            os.symlink(f, folder / f.name)
    (folder / META_FILE).write_text("{}")
    qa = Pipeline.from_settings(settings.with_overrides(reader_model=str(folder), reader_backend="torch"),
                                index=seed_index, embedder=embedder)
    answer = qa.run("Who did Anthropic hire to lead its infrastructure effort?")
    assert answer.calibrated is False
    with TestClient(create_app(settings, pipeline=qa)) as client:
        body = client.post("/ask", json={"question": "What is the capital of Mars?"}).json()
        assert body["calibrated"] is False and any("not calibrated" in w for w in body["warnings"])
        assert client.get("/health").json()["calibrated"] is False
    from rag.cli import format_answer

    assert "uncalibrated" in format_answer(answer) and "rag calibrate-reader" in format_answer(answer)
