"""Shared-normalisation training data and loss (`rag train-reader --shared-norm`): each question is read
against a group of passages the way `Pipeline` reads it, and one softmax spans every window of the group
(Clark & Gardner 2018), so the reader's logits become comparable across the passages it is served.

A group is the question's gold passage (the chunk of its paragraph that holds the answer) plus the
passages the project's hybrid retriever ranks highest that do not hold the answer, at least one of them
from another article; an unanswerable question's group is the retriever's top passages, all negatives."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from rag.config import Settings
from rag.offline.squad import Question, holds_answer, squad_corpus
from rag.offline.training.labels import answer_tokens, context_range
from rag.reader.model import tokenize_pairs

log = logging.getLogger(__name__)

#: How the windows' [CLS] scores make the group's one no-answer option: "lse" (log-sum-exp: every window's
#: [CLS] stays in the softmax and the no-answer probability is their sum) or "max" (only the highest).
NULL_SCORES = ("lse", "max")


@dataclass(frozen=True)
class GroupPassage:
    """One passage of a group: its text and, for the gold passage, where the answer stands in it."""

    text: str
    answer_start: int | None = None
    answer_text: str = ""


@dataclass(frozen=True)
class Group:
    """A question and the passages it is read against (in retrieval order)."""

    question: str
    passages: tuple[GroupPassage, ...]
    origin: str  # squad | squad-unanswerable | extra:<source>
    id: str = ""

    @property
    def answerable(self) -> bool:
        return any(p.answer_start is not None for p in self.passages)


def _article(source: str, single_title: bool) -> str:
    """The article a chunk's document belongs to: its title (`title/paragraph`), or the paragraph itself
    where the whole corpus has one title (Reddit posts: each post is its own article)."""
    return source if single_title else source.rsplit("/", 1)[0]


def retrieved_groups(questions: list[Question], corpus: list[Question], origin: str, embedder, settings: Settings,
                     size: int, depth: int = 30) -> tuple[list[Group], int]:
    """One group of `size` passages per question, retrieved from an index of `corpus`'s paragraphs (the
    question's own source) with the serving retriever; (groups, questions skipped because no chunk holds
    the whole answer)."""
    from tqdm import tqdm

    from rag.pipeline.retrieval import Retriever
    from rag.store.files.index import memory_index

    index = memory_index(squad_corpus(corpus), embedder, settings, progress=False)
    retriever = Retriever.from_settings(index, embedder, settings, top_k=depth)
    by_source: dict[str, list] = {}
    for chunk in index.chunks:
        by_source.setdefault(chunk.source, []).append(chunk)
    single_title = len({q.title for q in corpus}) == 1
    groups: list[Group] = []
    skipped = 0
    for q in tqdm(questions, desc=f"groups ({origin})", unit="question", mininterval=5):
        ranked = [p.chunk for p in retriever.run(q.question)]
        gold_source = f"{q.title}/{q.paragraph}"
        gold = None
        if q.answers:
            a_start, a_text = q.answer_starts[0], q.answers[0]
            holding = [c for c in ranked + by_source.get(gold_source, [])
                       if c.source == gold_source and c.start <= a_start and a_start + len(a_text) <= c.end]
            if not holding:
                skipped += 1
                continue
            gold = holding[0]
            negatives = [c for c in ranked if c != gold and not holds_answer(c.text, q.answers)]
        else:
            negatives = ranked
        k = size - 1 if gold is not None else size
        chosen = negatives[:k]
        own = _article(gold_source, single_title)
        if chosen and all(_article(c.source, single_title) == own for c in chosen):
            other = next((c for c in negatives[k:] if _article(c.source, single_title) != own), None)
            if other is not None:
                chosen[-1] = other
        passages = [GroupPassage(c.text) for c in chosen]
        if gold is not None:
            rank = ranked.index(gold) if gold in ranked else len(passages)
            passages.insert(min(rank, len(passages)),
                            GroupPassage(gold.text, q.answer_starts[0] - gold.start, q.answers[0]))
        groups.append(Group(q.question, tuple(passages), origin if q.answers else f"{origin}-unanswerable", q.id))
    return groups, skipped


def alone_groups(questions: list[Question], origin: str, fraction: float, rng: random.Random,
                 long_chars: int) -> list[Group]:
    """A `fraction` of the questions also read against their own paragraph alone, as a group of one passage:
    the unit earlier readers trained on, mixed in so that learning to rank across passages does not cost
    the skill of finding the answer in the right one. Paragraphs over `long_chars` (whole papers) are left
    to their retrieved groups."""
    out = []
    for q in questions:
        if rng.random() >= fraction or len(q.context) > long_chars:
            continue
        passage = GroupPassage(q.context, q.answer_starts[0], q.answers[0]) if q.answers else GroupPassage(q.context)
        kind = origin if q.answers else f"{origin}-unanswerable"
        out.append(Group(q.question, (passage,), f"{kind}-alone", q.id))
    return out


def group_items(tokenizer, groups: list[Group], max_length: int, stride: int, max_windows_per_passage: int,
                max_windows: int) -> list[dict]:
    """Each group as tokenised windows: every passage in at most `max_windows_per_passage` windows and the
    group in at most `max_windows` (as the reader serves), each window with its context token range and,
    where the answer lies inside it, its start/end tokens (0 elsewhere). Answerable groups whose answer no
    window holds whole are left out."""
    pairs = [(g, p) for g in groups for p in g.passages]
    per_group: dict[int, list[dict]] = {}
    per_passage: dict[tuple[int, int], int] = {}
    for i in range(0, len(pairs), 512):
        part = pairs[i : i + 512]
        enc = tokenize_pairs(tokenizer, [g.question for g, _ in part], [p.text for _, p in part], max_length, stride)
        for w, offsets in enumerate(enc["offset_mapping"]):
            g, p = part[enc["overflow_to_sample_mapping"][w]]
            key = (id(g), id(p))
            per_passage[key] = per_passage.get(key, 0) + 1
            windows = per_group.setdefault(id(g), [])
            if per_passage[key] > max_windows_per_passage or len(windows) >= max_windows:
                continue
            first, last = context_range(enc.sequence_ids(w))
            start = end = 0
            if p.answer_start is not None:
                start, end = answer_tokens(offsets, first, last, p.answer_start, p.answer_start + len(p.answer_text))
            window = {"input_ids": enc["input_ids"][w], "first": first, "last": last, "start": start, "end": end}
            if "token_type_ids" in enc:
                window["token_type_ids"] = enc["token_type_ids"][w]
            windows.append(window)
    items = []
    for g in groups:
        windows = per_group.get(id(g), [])
        if g.answerable and not any(w["start"] > 0 for w in windows):
            continue
        items.append({"windows": windows, "answerable": g.answerable, "origin": g.origin})
    return items


def collate_groups(batch: list[dict]):
    """The windows of a batch of groups as padded tensors, with each window's group, context mask and labels."""
    import torch

    flat = [w for item in batch for w in item["windows"]]
    width = max(len(w["input_ids"]) for w in flat)
    ids = torch.zeros((len(flat), width), dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    context = torch.zeros_like(ids, dtype=torch.bool)
    for row, w in enumerate(flat):
        n = len(w["input_ids"])
        ids[row, :n] = torch.tensor(w["input_ids"])
        if "token_type_ids" in w:
            types[row, :n] = torch.tensor(w["token_type_ids"])
        mask[row, :n] = 1
        context[row, w["first"] : w["last"] + 1] = True
    return {
        "inputs": {"input_ids": ids, "token_type_ids": types, "attention_mask": mask},
        "context": context,
        "group": torch.tensor([g for g, item in enumerate(batch) for _ in item["windows"]]),
        "start": torch.tensor([w["start"] for w in flat]),
        "end": torch.tensor([w["end"] for w in flat]),
        "answerable": torch.tensor([item["answerable"] for item in batch]),
    }


def shared_norm_loss(start_logits, end_logits, context, group, start, end, answerable, null: str = "lse"):
    """Mean over groups of the negative log-likelihood of the answer under one softmax (for starts, and one
    for ends) over every context token of every window of the group plus one no-answer option; the
    answer's probability is summed over the windows that hold it. `null` is one of NULL_SCORES."""
    import torch

    if null not in NULL_SCORES:
        raise ValueError(f"null must be one of {NULL_SCORES}, not {null!r}")
    losses = []
    for g in range(int(answerable.shape[0])):
        rows = group == g
        total = 0.0
        for logits, target in ((start_logits[rows], start[rows]), (end_logits[rows], end[rows])):
            spans = logits.masked_fill(~context[rows], float("-inf")).flatten()
            cls = logits[:, 0]
            no_answer = torch.logsumexp(cls, 0) if null == "lse" else cls.max()
            z = torch.logsumexp(torch.cat([spans, no_answer[None]]), 0)
            if bool(answerable[g]):
                hit = (target > 0).nonzero().flatten()
                gold = torch.logsumexp(logits[hit, target[hit]], 0)
            else:
                gold = no_answer
            total = total + (z - gold)
        losses.append(total / 2)
    return torch.stack(losses).mean()


def draw_groups_sources(extra: list[Question], picked: list[Question], embedder, settings: Settings,
                        size: int) -> tuple[list[Group], int]:
    """Groups for drawn extra questions, each read against an index of its own source's paragraphs."""
    groups: list[Group] = []
    skipped = 0
    for source in sorted({q.title.split(":")[0] for q in picked}):
        corpus = [q for q in extra if q.title.split(":")[0] == source]
        mine = [q for q in picked if q.title.split(":")[0] == source]
        made, lost = retrieved_groups(mine, corpus, f"extra:{source}", embedder, settings, size)
        groups += made
        skipped += lost
    return groups, skipped

