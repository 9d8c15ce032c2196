"""`rag serve` as a user starts it: a child process on a free port over the seed index, and two small
documents to upload to it."""
from __future__ import annotations

import subprocess
import sys
import time

import httpx

from rag.offline.bench import free_port

from helpers import REPO, SEEDS

HARBOUR = b"The harbour master of Inis Mor is called Sean Ryan. He took the post in 2019 after years at sea.\n"
FERRY = b"The ferry to Inis Mor leaves from Rossaveal harbour every morning at nine. Its captain is Nora Walsh.\n"


class Server:
    """`rag serve --data DATA` on a free port, its log in a file (a pipe nobody reads would fill and stall it)."""

    def __init__(self, data, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data.parent / f"server-{self.port}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rag.cli", "serve", "--port", str(self.port), "--data", str(data),
                 "--docs", str(SEEDS), "--index", str(REPO / "index"), *extra],
                stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                health = httpx.get(self.url + "/health", timeout=2)
                if health.status_code == 200 and health.json()["status"] != "loading":  # every collection open
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def call(self, method: str, path: str, token: str | None = None, headers: dict | None = None, **kwargs) -> httpx.Response:
        headers = {**(headers or {}), **({"authorization": f"Bearer {token}"} if token else {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=120, **kwargs)

    def upload(self, collection: str, name: str, data: bytes, token: str | None = None, **kwargs) -> httpx.Response:
        return self.call("POST", f"/collections/{collection}/documents", token, files={"file": (name, data)}, **kwargs)
