"""A simulated deployment of feedback calibration (the feedback issue's measurement): the SQuAD test
articles stand for a team's documents (each paragraph one document: the test split holds only three
articles). Their questions are read open-domain once; for each of three splits, the gold labels of the
questions of half the documents are fed in as feedback, the decision is refitted
(rag.offline.feedback_calibration: packaged dev reads + the team's, weight cross-validated), and the other
half is scored before (the shipped calibration) and after.

    .venv/bin/python scripts/feedback_simulation.py --train ../shared/data/reader-train.squad2.json
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from rag.config import Settings
from rag.offline.feedback_calibration import choose_weight, document_of, fit_weighted, outcome, read_open_domain
from rag.offline.squad import TEST_TITLES, dev_questions, load_squad
from rag.pipeline.calibration import Calibrator
from rag.reader.model import Reader
from rag.store.embedding import Embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True, help="the SQuAD 2.0 file the reader was trained on")
    parser.add_argument("--model", default=Settings.reader_model, help="reader folder (default: the packaged reader)")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=[],
                        help="also feed in only this many of the fed half's questions (drawn at random): do a few dozen help?")
    args = parser.parse_args()
    settings = Settings(reader_model=args.model)
    embedder, reader = Embedder.from_settings(settings), Reader.from_settings(settings)
    reader.warm_up()
    shipped = Calibrator.from_meta(reader.meta)
    questions = load_squad(args.train)
    base = read_open_domain(dev_questions(questions), settings, embedder, reader)
    team = read_open_domain([q for q in questions if q.title in TEST_TITLES], settings, embedder, reader)
    documents = sorted({document_of(q) for q in team.questions})
    print(f"packaged reads: {len(base.questions)} dev questions; team: {len(team.questions)} test questions about "
          f"{len(documents)} documents\n")
    print("| split | feedback questions | weight (CV) | threshold | wrong before → after | F1 before → after | NoAns acc. before → after |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for split in range(args.splits):
        rng = random.Random(split)
        fed = set(rng.sample(documents, len(documents) // 2))
        fed_rows = [i for i, q in enumerate(team.questions) if document_of(q) in fed]
        held = team.subset([i for i, q in enumerate(team.questions) if document_of(q) not in fed])
        for size in [len(fed_rows), *sorted(args.sizes)]:
            feedback = team.subset(sorted(random.Random(100 + split).sample(fed_rows, min(size, len(fed_rows)))))
            weight, _ = choose_weight(base, feedback)
            refit = fit_weighted(base, feedback, weight)
            b, a = outcome(shipped, held), outcome(refit, held)
            print(f"| {split + 1} | {len(feedback.questions)} | {weight:g} | {shipped.threshold:.2f} → {refit.threshold:.2f} | "
                  f"{b['wrong']} → {a['wrong']} | {b['f1']:.1f} → {a['f1']:.1f} | "
                  f"{b['no_answer_accuracy']:.1f} → {a['no_answer_accuracy']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
