"""API keys: `rag keys add|list|revoke`, kept in DATA/keys.json (mode 0600, written atomically). Only a
SHA-256 of each 32-byte random token is stored and compared in constant time; the token is shown once.
Each key has a scope (read or write) and the collections it reaches ('*': every one; what rag.service.access
enforces on every route)."""
from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rag.errors import RagError
from rag.ingest.names import EVERY, NAME

KEYS_FILE = "keys.json"
SCOPES = ("read", "write")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: How often a key's "last used" time is written back at most (a busy server must not write per request).
LAST_USED_EVERY = 60.0


class KeysError(RagError):
    """A key cannot be added, found or revoked as asked; the message says why."""


@dataclass
class Key:
    """One key as stored: never the token, only its hash."""

    name: str
    scope: str
    sha256: str
    created: str
    last_used: str | None = None
    collections: list[str] = field(default_factory=lambda: [EVERY])  # absent in keys made before: every one

    def __post_init__(self) -> None:
        if not isinstance(self.collections, list) or not all(isinstance(c, str) for c in self.collections):
            raise TypeError(f"the key {self.name!r} has collections {self.collections!r}, not a list of names")

    def allows(self, scope: str) -> bool:
        """A write key may do everything a read key may."""
        return self.scope == "write" or scope == "read"

    @property
    def everywhere(self) -> bool:
        """Whether it reaches every collection, those made later included ('*')."""
        return EVERY in self.collections

    def reaches(self, collection: str) -> bool:
        return self.everywhere or collection in self.collections


def check_collections(names: Iterable[str]) -> list[str]:
    """The collections a new key reaches, checked: '*' alone, or names of collections (which need not exist yet)."""
    names = [n.strip() for n in names]
    if names == [EVERY]:
        return names
    bad = [n for n in names if not NAME.fullmatch(n)]
    if bad or not names:
        raise KeysError(f"--collections takes '*' or collection names separated by commas (each 1-64 of a-z, 0-9, "
                        f"'_', '-'), not {','.join(names)!r}")
    return sorted(set(names))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class KeyStore:
    """The keys of one data folder. Reads the file when it changed on disk (a `rag keys` run beside a
    running server takes effect at once); writes it whole, atomically, mode 0600."""

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.path = Path(data_dir) / KEYS_FILE
        self._keys: dict[str, Key] = {}
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._used_written: dict[str, float] = {}  # key name -> when its "last used" was last written

    # -- reading -----------------------------------------------------------------------------------------

    def _load(self) -> dict[str, Key]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._keys, self._stamp = {}, None
            return self._keys
        stamp = (st.st_ino, st.st_mtime_ns)
        if stamp != self._stamp:
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                self._keys = {k["name"]: Key(**k) for k in raw.get("keys", [])}
            except (OSError, ValueError, TypeError, KeyError) as err:
                raise KeysError(f"{self.path} cannot be read ({err}); fix or remove it") from None
            self._stamp = stamp
        return self._keys

    def keys(self) -> list[Key]:
        with self._lock:
            return sorted(self._load().values(), key=lambda k: k.name)

    def any(self) -> bool:
        """Whether any key exists: then every route but /health and the page's files needs one."""
        with self._lock:
            return bool(self._load())

    def check(self, token: str) -> Key | None:
        """The key whose token this is, or None; every stored hash is compared, in constant time."""
        digest = _digest(token)
        with self._lock:
            found = None
            for key in self._load().values():
                if hmac.compare_digest(key.sha256, digest):
                    found = key
            if found is not None:
                found.last_used = _now()
                if time.monotonic() - self._used_written.get(found.name, -LAST_USED_EVERY) >= LAST_USED_EVERY:
                    self._used_written[found.name] = time.monotonic()
                    self._update(lambda keys: setattr(keys[found.name], "last_used", found.last_used)
                                 if found.name in keys else None)
            return found

    # -- writing -----------------------------------------------------------------------------------------

    def add(self, name: str, scope: str, collections: Iterable[str] = (EVERY,)) -> str:
        """Create a key that reaches `collections` and return its token (shown once, never stored)."""
        if not _NAME.fullmatch(name or ""):
            raise KeysError(f"a key name is 1-64 of letters, digits, '_', '.', '-': not {name!r}")
        if scope not in SCOPES:
            raise KeysError(f"the scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        collections = check_collections(collections)
        token = "rag_" + secrets.token_urlsafe(32)  # 32 random bytes

        def add(keys: dict[str, Key]) -> None:
            if name in keys:
                raise KeysError(f"a key named {name!r} exists; revoke it first or choose another name")
            keys[name] = Key(name, scope, _digest(token), _now(), collections=collections)

        with self._lock:
            self._update(add)
        return token

    def revoke(self, name: str) -> None:
        def revoke(keys: dict[str, Key]) -> None:
            if name not in keys:
                raise KeysError(f"no key named {name!r} (see `rag keys list`)")
            del keys[name]

        with self._lock:
            self._update(revoke)

    def _update(self, change) -> None:
        """Read the file afresh, change it and write it, holding an flock on keys.json.lock: a server
        recording "last used" and a `rag keys` run never write over each other's change."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(KEYS_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._stamp = None  # read what is on disk now, not a copy from before the lock
            keys = self._load()
            change(keys)
            self._save()
        finally:
            os.close(fd)

    def _save(self) -> None:
        """The whole file, written beside it with mode 0600 and renamed over it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"keys": [asdict(k) for k in sorted(self._keys.values(), key=lambda k: k.name)]}, indent=1)
        fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        st = self.path.stat()
        self._stamp = (st.st_ino, st.st_mtime_ns)
