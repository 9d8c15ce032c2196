"""Files made by the release before the package layout (tests/fixtures/release-67f76df, made by its make.py
at commit 67f76df) load unchanged: an index, a keys file and a feedback database."""
import json
import shutil
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "release-67f76df"


@pytest.fixture()
def release(tmp_path):
    """A copy of the fixture (nothing a test does may change the committed files)."""
    shutil.copytree(FIXTURE, tmp_path / "release")
    return tmp_path / "release"


def test_an_index_made_by_the_release_loads_and_answers_with_exact_citations(release, embedder):
    from rag.config import Settings
    from rag.pipeline.qa import Pipeline
    from rag.store.files.index import load_index, staleness

    index = load_index(release / "index")
    assert sorted(index.documents) == ["harbour.md", "lighthouse.txt"] and len(index.chunks) == 2
    settings = Settings.of(docs_dir=release / "docs", index_dir=release / "index")
    assert not staleness(index.manifest, settings)  # the release's index is current: nothing is rebuilt
    answer = Pipeline.from_settings(settings, rebuild=False, embedder=embedder).ask("Who designed the Fastnet Rock lighthouse?")
    assert answer.answer == "William Douglass"
    cited = answer.citations[0]
    assert cited.source == "lighthouse.txt"
    assert index.documents["lighthouse.txt"].text[cited.start:cited.end] == "William Douglass"


def test_a_keys_file_made_by_the_release_still_checks_its_tokens(release):
    from rag.service.keys import KeyStore

    tokens = json.loads((release / "tokens.json").read_text())
    keys = KeyStore(release / "data")
    team = keys.check(tokens["team-a-read"])
    assert (team.name, team.scope, team.collections) == ("team-a-read", "read", ["team-a"])
    assert team.reaches("team-a") and not team.reaches("team-b")
    operator = keys.check(tokens["operator"])
    assert operator.scope == "write" and operator.everywhere
    assert keys.check("not-a-token") is None


def test_a_feedback_database_made_by_the_release_still_reads(release):
    from rag.service.feedback import FeedbackStore

    records = FeedbackStore(release / "data").records()
    assert len(records) == 1
    row = records[0]
    assert (row["collection"], row["question"], row["answer"], row["verdict"]) == (
        "default", "Who designed the lighthouse?", "William Douglass", "right")
