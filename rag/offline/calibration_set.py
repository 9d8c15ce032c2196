"""The held-out part of the calibration set (`rag calibrate-reader --extra FILE`): the extra questions that no
run of the reader's lineage trained on, read open-domain against their own source's paragraphs as deployed.
A share of them (chosen by a hash of their id; by default the dev split's share of unanswerable questions,
so the set's mix stays the one earlier thresholds were chosen on) are read with their answer taken away
(the gold paragraph and every passage holding an answer left out of the retrieved ones), so they become
questions the documents do not answer: the set teaches the decision to abstain outside Wikipedia too."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

from rag.offline.squad import Question, holds_answer, load_squad, squad_corpus

log = logging.getLogger(__name__)


def heldout_extra(extra_file: Path, lineage: list[dict], answerable_train: int) -> list[Question]:
    """The extra file's answerable questions that no run of `lineage` drew (rag.offline.training's replay)."""
    from rag.offline.training.data import replay_extra_draws

    questions = load_squad(extra_file)
    used = replay_extra_draws(lineage, questions, answerable_train)
    return [q for q in questions if q.answers and q.id not in used]


def answer_removed(question_id: str, share: float) -> bool:
    """Whether this question is read with its answer taken away (a `share` of them, fixed by the id)."""
    return int.from_bytes(hashlib.sha256(question_id.encode()).digest()[:4], "big") < share * 2**32


def read_heldout(questions: list[Question], extra_file: Path, settings, embedder, reader,
                 removed_share: float) -> tuple[list[Question], list]:
    """(questions as labelled for scoring: the answer-removed ones without answers, their judgements), each
    read over the retrieved passages of an index of its source's paragraphs."""
    from tqdm import tqdm

    from rag.pipeline.qa import Pipeline
    from rag.store.files.index import memory_index

    everything = load_squad(extra_file)
    labelled, judgements = [], []
    for source in sorted({q.title.split(":")[0] for q in questions}):
        corpus = [q for q in everything if q.title.split(":")[0] == source]
        index = memory_index(squad_corpus(corpus), embedder, settings, progress=True)
        pipeline = Pipeline.from_settings(settings, index=index, embedder=embedder, reader=reader, calibrated=False)
        mine = [q for q in questions if q.title.split(":")[0] == source]
        for q in tqdm(mine, desc=f"calibration ({source})", unit="question"):
            if answer_removed(q.id, removed_share):
                gold = f"{q.title}/{q.paragraph}"
                found = pipeline.retriever.run(q.question, top_k=settings.top_k + 15)
                passages = [p for p in found if p.chunk.source != gold
                            and not holds_answer(p.chunk.text, q.answers)][: settings.top_k]
                passages = [replace(p, rank=r) for r, p in enumerate(passages)]
                labelled.append(replace(q, answers=(), answer_starts=()))
            else:
                passages = pipeline.retriever.run(q.question)
                labelled.append(q)
            judgements.append(pipeline.judge(q.question, passages))
    return labelled, judgements
