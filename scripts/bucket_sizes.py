"""How much bucketing window lengths saves on each reader runtime: the seed questions' retrieved passages read
with windows padded to a multiple of 1 (no bucketing), 16, 32 and 64 tokens. Each (runtime, bucket) runs in
a fresh process, so no kernel made for one setting is reused by another; the first round over the questions
meets every shape for the first time, the later rounds reuse what was made. Prints a Markdown table.

    python scripts/bucket_sizes.py [--buckets 1 16 32 64] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one(backend: str, bucket: int, rounds: int) -> dict:
    """Read every seed question's retrieved passages `rounds` times with this runtime and bucket."""
    import numpy as np

    from rag.config import Settings
    from rag.offline.evaluation import load_qa
    from rag.pipeline.qa import Pipeline
    from rag.store.embedding import Embedder
    from rag.store.files.index import open_index

    settings = Settings().with_overrides(reader_backend=backend, reader_length_bucket=bucket)
    embedder = Embedder.from_settings(settings)
    pipeline = Pipeline.from_settings(settings, index=open_index(settings, embedder, rebuild=False),
                                      embedder=embedder, rebuild=False)
    pipeline.warm_up()
    reader = pipeline.reader
    asked = [(i.question, [p.chunk.text for p in pipeline.retriever.run(i.question)])
             for i in load_qa(REPO / "eval" / "qa.jsonl")]
    per_round, shapes, real, padded = [], set(), 0, 0
    for r in range(rounds):
        times = []
        for question, contexts in asked:
            started = time.perf_counter()
            reader.run(question, contexts)
            times.append((time.perf_counter() - started) * 1000)
            if r == 0:  # the batch shapes Reader.logits makes: each batch cut to its longest window, then bucketed
                encoding = reader.encode([question] * len(contexts), contexts)
                rows = reader.kept_windows(encoding, reader.max_windows)
                lengths = np.asarray(encoding["attention_mask"])[rows].sum(axis=1)
                for i in range(0, len(rows), reader.batch_size):
                    part = lengths[i : i + reader.batch_size]
                    longest = int(part.max())
                    width = reader.padded_width(longest)
                    shapes.add((len(part), width))
                    real += int(part.sum())
                    padded += len(part) * width
        per_round.append(times)
    return {"runtime": reader.runtime, "bucket": bucket, "shapes": len(shapes),
            "padding": 1 - real / padded, "first_round_mean": float(np.mean(per_round[0])),
            "later_p50": float(np.median([t for times in per_round[1:] for t in times]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buckets", type=int, nargs="+", default=[1, 16, 32, 64])
    parser.add_argument("--backends", nargs="+", default=None,
                        help="default: torch, torch-bf16 where the CPU has bf16, onnx-fp32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("BACKEND", "BUCKET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one[0], int(args.one[1]), args.rounds)))
        return
    from rag.runtime.cpu import cpu_flags, has_bf16_dot_product

    backends = args.backends or ["torch", *(["torch-bf16"] if has_bf16_dot_product() else []), "onnx-fp32"]
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    print(f"CPU flags: {', '.join(f for f in wanted if f in cpu_flags())}; reader forward + span search per question,"
          f" {args.rounds} rounds over the seed questions' retrieved passages")
    print("| runtime | bucket (tokens) | distinct batch shapes | padding share | first round mean (ms) | later rounds p50 (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for backend in backends:
        for bucket in args.buckets:
            out = subprocess.run([sys.executable, __file__, "--one", backend, str(bucket), "--rounds", str(args.rounds)],
                                 capture_output=True, text=True, cwd=REPO, check=True).stdout
            r = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
            print(f"| {r['runtime']} | {r['bucket']} | {r['shapes']} | {r['padding']:.1%} | "
                  f"{r['first_round_mean']:.0f} | {r['later_p50']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
