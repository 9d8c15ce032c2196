"""SQuAD 2.0 files and metrics: loading, article-disjoint splits, the official answer normalisation
(plus Unicode folding of typographic punctuation), exact match and token F1, their aggregates, and when
an answer counts as right."""
from __future__ import annotations

import collections
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rag.errors import RagError
from rag.records import Chunk, Document, Passage
from rag.text import normalize_answer


@dataclass(frozen=True)
class Question:
    """One SQuAD question with its paragraph; `answers` is empty for an unanswerable one."""

    id: str
    title: str
    paragraph: int  # index of the paragraph within its article
    context: str
    question: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


class SquadFormatError(RagError):
    """A file that is not in SQuAD 2.0 format; the message says where."""


def load_squad(path: Path) -> list[Question]:
    """Every question of a SQuAD 2.0-format file; paragraphs of repeated titles keep counting on."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as err:
        raise SquadFormatError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise SquadFormatError(f"{path} is not a SQuAD-format file (no top-level 'data' list)")
    questions: list[Question] = []
    paragraph_count: dict[str, int] = collections.Counter()
    try:
        for article in data["data"]:
            title = article.get("title", "untitled")
            for para in article["paragraphs"]:
                number = paragraph_count[title]
                paragraph_count[title] += 1
                for qa in para["qas"]:
                    answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                    spans = [_trimmed(a["text"], int(a["answer_start"])) for a in answers]
                    questions.append(
                        Question(
                            id=str(qa["id"]),
                            title=title,
                            paragraph=number,
                            context=para["context"],
                            question=qa["question"],
                            answers=tuple(text for text, _ in spans),
                            answer_starts=tuple(start for _, start in spans),
                        )
                    )
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise SquadFormatError(f"{path} is not a SQuAD-format file ({type(err).__name__}: {err})") from None
    return questions


def _trimmed(text: str, start: int) -> tuple[str, int]:
    """An answer without white space around it, its start moved past what was cut: some files' answers
    begin at a space, which would label the token before the answer as its start."""
    lead = len(text) - len(text.lstrip())
    return (text.strip(), start + lead) if text.strip() else (text, start)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def score_prediction(prediction: str | None, golds: list[str] | tuple[str, ...]) -> tuple[float, float]:
    """(exact match, F1) in [0, 1] under the SQuAD 2.0 convention: with no gold answer, abstaining
    scores 1 and any answer 0; an abstention on an answerable question scores 0."""
    if not golds:
        return (1.0, 1.0) if prediction is None else (0.0, 0.0)
    if prediction is None:
        return 0.0, 0.0
    return max(exact_match(prediction, g) for g in golds), max(token_f1(prediction, g) for g in golds)


#: An answer is right when its token F1 against the gold answers reaches this: the label the answerability
#: model is fitted to, and what counts of "wrong answers" count against (an answer to an unanswerable
#: question scores 0, so it is never right).
RIGHT_F1 = 0.5


def is_right(f1: float) -> bool:
    """Whether an answer with this F1 (score_prediction's, in [0, 1]) is right."""
    return f1 >= RIGHT_F1


def squad2_scores(scores: Iterable[tuple[bool, float, float]], empty: float | None = 0.0) -> dict[str, float | None]:
    """The SQuAD 2.0 aggregates, in percent and unrounded, of (answerable, exact match, F1) per question:
    exact match and F1 over all questions, HasAns F1 over the answerable ones, NoAns accuracy over the
    unanswerable ones; `empty` for a group without questions."""
    rows = list(scores)

    def pct(xs: list[float]) -> float | None:
        return 100.0 * sum(xs) / len(xs) if xs else empty

    return {
        "exact_match": pct([em for _, em, _ in rows]),
        "f1": pct([f1 for _, _, f1 in rows]),
        "has_answer_f1": pct([f1 for answerable, _, f1 in rows if answerable]),
        "no_answer_accuracy": pct([em for answerable, em, _ in rows if not answerable]),
    }


def squad2_metrics(questions: list[Question], predictions: list[str | None]) -> dict[str, float]:
    """squad2_scores of predictions (None = abstain) and the number of questions `n`, as training and
    calibration record them in reader_meta.json."""
    scores = [(bool(q.answers), *score_prediction(p, q.answers)) for q, p in zip(questions, predictions)]
    return {**squad2_scores(scores), "n": len(questions)}


def split_by_title(questions: list[Question], held_out: set[str]) -> tuple[list[Question], list[Question]]:
    """(questions of other articles, questions of the `held_out` articles): an article-disjoint split."""
    rest = [q for q in questions if q.title not in held_out]
    out = [q for q in questions if q.title in held_out]
    return rest, out


#: Articles of reader-train.squad2.json kept out of training. DEV picks the reader's threshold and
#: calibration; TEST is never looked at by training and is what `rag eval --squad` reports on.
DEV_TITLES = frozenset({"Normans", "Sky_(United_Kingdom)", "To_Kill_a_Mockingbird", "Solar_energy"})
TEST_TITLES = frozenset({"Southern_California", "Victoria_(Australia)", "IPod"})


def dev_questions(questions: list[Question], limit: int = 0) -> list[Question]:
    """The questions of the DEV_TITLES articles; with `limit`, that many spread evenly over them."""
    _, dev = split_by_title(questions, set(DEV_TITLES))
    if limit:
        dev = dev[:: max(1, len(dev) // limit)][:limit]
    return dev


def squad_corpus(questions: list[Question]) -> list[Document]:
    """One document per paragraph of the questions' articles, `source` = `<title>/<paragraph number>`."""
    paragraphs = {(q.title, q.paragraph): q.context for q in questions}
    return [Document(f"{title}/{number}", text) for (title, number), text in sorted(paragraphs.items())]


def holds_answer(text: str, answers: Iterable[str]) -> bool:
    """Whether a passage's text holds any of the answers (case-folded, each answer stripped; an empty one
    holds nothing): what makes a retrieved passage a negative, or an answer-removed read, or not."""
    low = text.lower()
    return any(a.strip() and a.strip().lower() in low for a in answers)


def gold_passage(q: Question) -> Passage:
    """The question's own paragraph as the only passage (reader-only evaluation)."""
    return Passage(Chunk(f"{q.title}/{q.paragraph}", 0, len(q.context), q.context), 1.0, 0)
