"""What would the answer-or-abstain decision gain from three more answerability features, or from the
cautious threshold rule? A measurement, not part of the product (it writes nothing):

    .venv/bin/python scripts/calibration_study.py --train ../shared/data/reader-train.squad2.json --model rag/models/reader

(`rag calibrate-reader --study` runs it too). It fits the calibrator on the dev articles read open-domain,
with the serving features or with STUDY_FEATURES added, chooses its threshold on dev by the max-F1 rule or
the cautious one (the highest within --f1-tolerance F1 of the max), and scores each on dev and on the test
articles read open-domain (never used to choose anything), with the count of wrong answers given. It
prints a Markdown table (docs/reader.md, "Answer or abstain").
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rag.config import Settings
from rag.offline.squad import (
    TEST_TITLES,
    dev_questions,
    is_right,
    load_squad,
    score_prediction,
    split_by_title,
    squad2_metrics,
    squad_corpus,
)
from rag.reader.model import Reader
from rag.text import normalize_answer

# Study-only answerability features: measured, not (yet) used in serving.
_STOPWORDS = frozenset("""
a an the of in on at to for from by with without about as into onto over under after before during since
and or but nor not no so than then that this these those there here it its he she him her his hers they
them their theirs we us our you your i me my is are was were be been being am do does did done have has had
having can could will would shall should may might must what which who whom whose when where why how
""".split())
_NUMBER_WORDS = frozenset("""
one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen
eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion
first second third half dozen
""".split())
_ASKS_NUMBER = ("how many", "how much", "how long", "how old", "how far", "how big", "how large", "how tall",
                "what year", "which year", "what percentage", "what percent", "when")
_ASKS_PERSON = ("who", "whom", "whose")
STUDY_FEATURES = ("question_overlap", "answer_in_question", "type_match")


def content_words(text: str) -> set[str]:
    """The normalised words of `text` that carry meaning (no function words)."""
    return {w for w in normalize_answer(text).split() if w not in _STOPWORDS}


def type_match(question: str, answer: str) -> float:
    """Whether the answer is the kind of thing the question's wh-word asks for: a number or date for
    "how many"/"when"/"what year", a capitalised name for "who"; 0.5 when the question does not say."""
    q = " " + " ".join(question.lower().split()) + " "
    if any(f" {cue} " in q for cue in _ASKS_NUMBER):
        return float(any(ch.isdigit() for ch in answer) or any(w in _NUMBER_WORDS for w in normalize_answer(answer).split()))
    if any(f" {cue} " in q for cue in _ASKS_PERSON):
        return float(answer[:1].isupper())
    return 0.5


def study_features(question: str, best, passages: list) -> list[float]:
    """STUDY_FEATURES of the best candidate: the share of the question's content words found in the
    answer's sentence, the share of the answer's content words the question already holds, type_match."""
    from rag.ingest.chunking import sentence_spans

    passage, start, _ = best.places[0]
    text = passages[passage].chunk.text
    sentence = next((text[a:b] for a, b in sentence_spans(text) if a <= start < b), text)
    asked, said = content_words(question), content_words(best.text)
    return [len(asked & content_words(sentence)) / len(asked) if asked else 0.0,
            len(said & asked) / len(said) if said else 0.0,
            type_match(question, best.text)]


def open_domain_reads(settings: Settings, embedder, reader: Reader, questions: list, name: str) -> list[tuple]:
    """(best candidate or None, serving features + STUDY_FEATURES) of each question, read open-domain over
    the paragraphs of its split's articles."""
    from tqdm import tqdm

    from rag.pipeline.qa import Pipeline
    from rag.store.files.index import memory_index

    index = memory_index(squad_corpus(questions), embedder, settings)
    pipeline = Pipeline.from_settings(settings, index=index, embedder=embedder, reader=reader, calibrated=False)
    rows = []
    for q in tqdm(questions, desc=f"open-domain reads ({name})", unit="question"):
        passages = pipeline.retriever.run(q.question)
        j = pipeline.judge(q.question, passages)
        rows.append((j.best, None if j.best is None else np.concatenate([j.features, study_features(q.question, j.best, passages)])))
    return rows


def scored(questions: list, rows: list[tuple], calibrator, columns: list[int], threshold: float) -> dict:
    """SQuAD 2.0 metrics of the answers the calibrator lets through at `threshold`, with `wrong`: the
    answers given that are not right."""
    out = [best.text if best is not None and float(calibrator.probability(x[columns])[0]) >= threshold else None
           for best, x in rows]
    m = squad2_metrics(questions, out)
    m["wrong"] = sum(1 for q, a in zip(questions, out) if a is not None and not is_right(score_prediction(a, q.answers)[1]))
    return m


def calibration_study(train_file: Path, model_dir: Path, f1_tolerance: float = 0.5) -> str:
    """What the answer-or-abstain decision would gain from each change, as a Markdown table: the calibrator
    fitted on the dev articles read open-domain with the serving features or with STUDY_FEATURES added, its
    threshold chosen on dev by the max-F1 rule or the cautious one (the highest within `f1_tolerance` F1);
    each scored on dev and on the test articles read open-domain (never used to choose anything), with the
    count of wrong answers given. Writes nothing."""
    from rag.pipeline.calibration import FEATURES, choose_threshold, fit_calibrator
    from rag.store.embedding import Embedder

    settings = Settings(reader_model=str(model_dir))
    rest, test = split_by_title(load_squad(train_file), set(TEST_TITLES))
    dev = dev_questions(rest)
    embedder, reader = Embedder.from_settings(settings), Reader.from_settings(settings)
    reads = {name: open_domain_reads(settings, embedder, reader, questions, name) for name, questions in (("dev", dev), ("test", test))}
    n = len(FEATURES)
    feature_sets = {f"serving ({n})": list(range(n)), f"serving + {', '.join(STUDY_FEATURES)}": list(range(n + len(STUDY_FEATURES)))}
    rules = {"max dev F1": 0.0, f"highest within {f1_tolerance} of max dev F1": f1_tolerance}
    answered = [(q, best, x) for q, (best, x) in zip(dev, reads["dev"]) if best is not None]
    x = np.array([x for _, _, x in answered])
    y = np.array([is_right(score_prediction(best.text, q.answers)[1]) for q, best, _ in answered])
    lines = ["| features | threshold rule | threshold | dev F1 | dev NoAns | dev wrong answers | test F1 | test NoAns | test wrong answers |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for fname, columns in feature_sets.items():
        calibrator = fit_calibrator(x[:, columns], y)
        for rname, tolerance in rules.items():
            threshold, _ = choose_threshold(lambda t, c=calibrator, k=columns: scored(dev, reads["dev"], c, k, t),
                                            f1_tolerance=tolerance)
            d = scored(dev, reads["dev"], calibrator, columns, threshold)
            t = scored(test, reads["test"], calibrator, columns, threshold)
            lines.append(f"| {fname} | {rname} | {threshold:.2f} | {d['f1']:.1f} | {d['no_answer_accuracy']:.1f} | {d['wrong']}"
                         f" | {t['f1']:.1f} | {t['no_answer_accuracy']:.1f} | {t['wrong']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", dest="train_file", type=Path, required=True, metavar="FILE",
                        help="the SQuAD 2.0 file the reader was trained on")
    parser.add_argument("--model", type=Path, required=True, metavar="DIR", help="reader model folder")
    parser.add_argument("--f1-tolerance", type=float, default=0.5, metavar="T",
                        help="the cautious rule's tolerance, compared with 0 (default 0.5)")
    args = parser.parse_args(argv)
    print(calibration_study(args.train_file, args.model, args.f1_tolerance))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
