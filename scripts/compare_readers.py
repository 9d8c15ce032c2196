"""Readers side by side, as `rag eval` scores them: the SQuAD dev and test splits read open-domain and the
hand-written seed set, with answers widened to whole words and without (`--no-word-widening`). The
embedder and each index load once. Prints a Markdown table: F1, no-answer accuracy, and the answers given
that are wrong (F1 < 50).

    python scripts/compare_readers.py --train ../shared/data/reader-train.squad2.json \
        --reader v5=/path/to/v5 --reader v7=/path/to/v7 [--backend onnx]
"""
from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from rag.config import Settings
    from rag.offline.evaluation import load_qa, run_items, squad_items
    from rag.offline.squad import squad_corpus
    from rag.pipeline.qa import Pipeline
    from rag.store.embedding import Embedder
    from rag.store.files.index import memory_index, open_index

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="the SQuAD 2.0 file with the dev and test articles")
    parser.add_argument("--reader", action="append", required=True, metavar="NAME=DIR[:SETS[:WIDEN]]",
                        help="a reader to score; optionally only on some sets (dev,test,seeds) and word modes (on,off)")
    parser.add_argument("--sets", nargs="+", default=["dev", "test", "seeds"])
    parser.add_argument("--widen", nargs="+", default=["on", "off"], choices=["on", "off"])
    parser.add_argument("--backend", default="torch", help="the reader runtime (rag ask --reader-backend): torch,"
                        " torch-bf16, onnx-fp32 or onnx (the folder's int8 export)")
    args = parser.parse_args()
    base = Settings()
    embedder = Embedder.from_settings(base)
    sets = {}
    for name in args.sets:
        if name == "seeds":
            sets[name] = (open_index(base, embedder, rebuild=False), [i for i in load_qa(REPO / "eval" / "qa.jsonl")])
        else:
            questions, pairs = squad_items(args.train, None, name)
            sets[name] = (memory_index(squad_corpus(questions), embedder, base), [item for _, item in pairs])
    print("| reader | words | set | n | F1 | no-answer accuracy | answered (answerable) | wrong answers (F1 < 50) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for spec in args.reader:
        name, rest = spec.split("=", 1)
        folder, *limits = rest.split(":")
        only_sets = limits[0].split(",") if limits else list(sets)
        only_widen = limits[1].split(",") if len(limits) > 1 else args.widen
        for widen in only_widen:
            settings = base.with_overrides(reader_model=folder, widen_to_words=widen == "on", reader_backend=args.backend)
            for set_name, (index, items) in sets.items():
                if set_name not in only_sets:
                    continue
                pipeline = Pipeline.from_settings(settings, index=index, embedder=embedder, rebuild=False)
                report = run_items(pipeline, items, name=f"{name} {set_name} widen={widen}")
                m = report.metrics
                wrong = sum(1 for r in report.rows if r.prediction is not None and r.f1 < 0.5)
                print(f"| {name} | {'whole' if widen == 'on' else 'as read'} | {set_name} | {m['n']} | {m['f1']:.1f} | "
                      f"{m['no_answer_accuracy']:.1f} | {m['answered_answerable']:.1f} | {wrong} |", flush=True)


if __name__ == "__main__":
    main()
