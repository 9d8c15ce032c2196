"""What an MCP `ask` costs against `POST /ask` for the same questions, on one real `rag serve` (the seed
documents): warm latency, median and p90 over every seed question asked --rounds times each way, both over
HTTP on 127.0.0.1. Prints a Markdown table with the CPU, the date and the commit.

    python scripts/mcp_cost.py --rounds 3
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.offline.bench import QUESTIONS_FILE, free_port, http_json, start_server, stop_server  # noqa: E402
from rag.runtime.cpu import cpu_model  # noqa: E402


def main() -> None:
    import anyio
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    questions = [json.loads(line)["question"] for line in QUESTIONS_FILE.read_text().splitlines() if line.strip()]
    port = free_port()
    proc = start_server(port)
    base = f"http://127.0.0.1:{port}"
    try:
        for q in questions[:3]:  # warm-up: every runtime's first calls
            http_json("POST", base + "/ask", {"question": q})
        rest = []
        for _ in range(args.rounds):
            for q in questions:
                t = time.perf_counter()
                status, _body = http_json("POST", base + "/ask", {"question": q})
                rest.append(time.perf_counter() - t)
                assert status == 200, status

        async def over_mcp() -> list[float]:
            times = []
            async with httpx2.AsyncClient(timeout=120) as http, \
                    streamable_http_client(base + "/mcp", http_client=http) as streams, \
                    ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                for _ in range(args.rounds):
                    for q in questions:
                        t = time.perf_counter()
                        result = await session.call_tool("ask", {"question": q})
                        times.append(time.perf_counter() - t)
                        assert not result.is_error, result
            return times

        mcp = anyio.run(over_mcp)
    finally:
        stop_server(proc)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"{datetime.date.today()}, commit {commit}, {cpu_model()}; {len(questions)} seed questions x {args.rounds}\n")
    print("| route | asks | p50 ms | p90 ms |")
    print("|---|---:|---:|---:|")
    for name, times in (("POST /ask", rest), ("MCP ask (POST /mcp)", mcp)):
        ms = np.asarray(times) * 1000
        print(f"| {name} | {len(ms)} | {np.percentile(ms, 50):.0f} | {np.percentile(ms, 90):.0f} |")


if __name__ == "__main__":
    main()
