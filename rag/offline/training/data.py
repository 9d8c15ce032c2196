"""A training run's data: its settings, the examples (SQuAD, retriever negatives, the extra draw and its
replay across a lineage, passages of long contexts) and the tokenised windows and batches made of them."""
from __future__ import annotations

import collections
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from rag.config import PACKAGED_EMBEDDER, Settings
from rag.offline.squad import (
    DEV_TITLES,
    TEST_TITLES,
    Question,
    dev_questions,
    file_sha256,
    holds_answer,
    load_squad,
    split_by_title,
    squad_corpus,
)
from rag.offline.training.labels import answer_tokens, context_range
from rag.offline.training.lineage import TrainingError, lineage_of
from rag.reader.model import tokenize_pairs

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Every setting of a training run; recorded whole in the model's metadata."""

    train_file: str
    output: str
    extra_file: str | None = None
    extra_sources: list[str] = field(default_factory=lambda: ["squadshifts-new_wiki"])
    extra_questions: int = 4000
    negative_fraction: float = 0.3
    negative_top_k: int = 4  # passages retrieved per question when looking for a negative
    base_model: str = PACKAGED_EMBEDDER
    epochs: float = 1.0
    learning_rate: float = 1e-4
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    batch_size: int = 16
    max_length: int = 256
    stride: int = 96
    max_windows: int = 0  # 0: no cap
    seed: int = 13
    threads: int = 0
    bf16: bool | None = None  # bfloat16 autocast for the forward pass (master weights stay fp32); None: on where
    # the CPU has AMX or AVX512-BF16 (or the GPU has bf16), decided at the run's start and recorded
    dev_questions: int = 0  # 0: the whole development split; fewer for a quick smoke run
    init: str | None = None  # continue from this reader (QA head kept); its lineage carries on
    fresh_extra: bool = True  # with init: draw only extra questions no earlier run of the lineage used
    long_context_chars: int = 3000  # longer contexts (CovidQA's whole papers) are cut into passages
    passage_chars: int = 1200  # the size of those passages
    checkpoint_minutes: float = 10.0  # a full, resumable checkpoint this often
    shared_norm: bool = False  # read each question against a group of retrieved passages, one softmax over them
    group_size: int = Settings.top_k  # passages a group holds (what the pipeline reads: top_k)
    null_score: str = "lse"  # the group's no-answer option (rag.offline.training.groups.NULL_SCORES)
    alone_fraction: float = 0.0  # with shared_norm: this share of the questions is also read against its own
    # paragraph alone (a group of one passage), to keep the gold-paragraph skill while learning the ranking
    extra_from_used: bool = False  # with init: draw only extra questions the lineage already trained on, so
    # the ones it never drew stay held out (the calibration set of `rag calibrate-reader --extra`)
    lora_rank: int = 0  # 0: fine-tune every weight; N: freeze the base and train rank-N adapters on its linear
    # layers (with biases, LayerNorms and the QA head in full): a large base trains faster, ships as an adapter
    lora_alpha: float = 32.0  # the adapters' scale is lora_alpha / lora_rank

    def __post_init__(self) -> None:
        if not 0.0 <= self.alone_fraction <= 1.0:
            raise TrainingError(f"--alone-fraction must be between 0 and 1, not {self.alone_fraction}")
        if self.group_size < 1:
            raise TrainingError(f"--group-size must be at least 1, not {self.group_size}")
        if self.lora_rank < 0 or self.lora_alpha <= 0:
            raise TrainingError("--lora-rank must be 0 or more and --lora-alpha positive")
        if self.lora_rank and self.init:
            raise TrainingError("--lora-rank trains adapters on a base encoder: it cannot continue a reader (--init)")
        if self.null_score not in ("lse", "max"):  # rag.offline.training.groups.NULL_SCORES
            raise TrainingError(f"--null-score must be lse or max, not {self.null_score!r}")


@dataclass(frozen=True)
class Example:
    question: str
    context: str
    answer_start: int | None  # None: unanswerable
    answer_text: str = ""
    origin: str = "squad"  # squad | squad-negative | extra | extra-negative
    id: str = ""


def examples_from(questions: list[Question], origin: str) -> list[Example]:
    """One training example per question (its first answer), or an unanswerable one."""
    return [
        Example(q.question, q.context, q.answer_starts[0], q.answers[0], origin, q.id)
        if q.answers
        else Example(q.question, q.context, None, "", origin, q.id)
        for q in questions
    ]


def retrieved_negatives(questions: list[Question], fraction: float, rng: random.Random, embedder,
                        settings: Settings, top_k: int) -> list[Example]:
    """For a sample of answerable questions, the best passage the project's retriever finds for them
    among their article's other passages that does not contain the answer, labelled unanswerable."""
    from tqdm import tqdm

    from rag.pipeline.retrieval import Retriever
    from rag.store.files.index import memory_index

    by_title: dict[str, list[Question]] = {}
    for q in questions:
        by_title.setdefault(q.title, []).append(q)
    negatives: list[Example] = []
    for title, qs in tqdm(sorted(by_title.items()), desc="retriever negatives", unit="article"):
        index = memory_index(squad_corpus(qs), embedder, settings)
        retriever = Retriever.from_settings(index, embedder, settings, top_k=top_k)
        for q in qs:
            if not q.answers or rng.random() >= fraction:
                continue
            gold = f"{title}/{q.paragraph}"
            for passage in retriever.run(q.question):
                text = passage.chunk.text
                if passage.chunk.source != gold and not holds_answer(text, q.answers):
                    negatives.append(Example(q.question, text, None, "", "squad-negative"))
                    break
    return negatives


def extra_examples(path: Path, sources: list[str], n: int, rng: random.Random,
                   exclude: frozenset[str] = frozenset()) -> list[Example]:
    """`n` answerable questions sampled evenly from the named sources of the extra file (round-robin, so a
    small source is taken whole and the big ones fill the rest), whatever each source's size; questions
    whose id is in `exclude` (used by an earlier run) are never drawn."""
    return examples_from(draw_extra(load_squad(path), sources, n, rng, exclude), "extra")


def draw_extra(questions: list[Question], sources: list[str], n: int, rng: random.Random,
               exclude: frozenset[str] = frozenset()) -> list[Question]:
    """The round-robin draw behind `extra_examples`, on loaded questions (replayed to rebuild a lineage)."""
    pools: dict[str, list[Question]] = {s: [] for s in sources}
    for q in questions:
        source = q.title.split(":")[0]
        if q.answers and source in pools and q.id not in exclude:
            pools[source].append(q)
    for pool in pools.values():
        rng.shuffle(pool)
    picked: list[Question] = []
    while len(picked) < n and any(pools.values()):
        for pool in pools.values():
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return picked


def extra_draw_rng(seed: int) -> random.Random:
    """The extra draw's own random stream, so later runs can replay it without the rest of the data."""
    return random.Random(f"extra-draw-{seed}")


def replay_extra_draws(lineage: list[dict], questions: list[Question], answerable_train: int) -> set[str]:
    """The ids of every extra question that the runs of a lineage trained on, by replaying their seeded
    draws in order. Runs from before draws had their own stream (`rng: shared`) drew after one random
    number per answerable SQuAD question (the retriever-negative coin flips), so the replay does the same."""
    used: set[str] = set()
    for run in lineage:
        draw = run.get("extra_draw")
        if not draw or not draw.get("questions"):
            continue
        if draw.get("rng") == "separate":
            rng = extra_draw_rng(draw["seed"])
        else:
            rng = random.Random(draw["seed"])
            if draw.get("negative_fraction", 0) > 0:
                for _ in range(answerable_train):
                    rng.random()
        if draw.get("from_used"):
            continue  # a redraw of questions already used: it adds none
        exclude = frozenset(used) if draw.get("fresh") else frozenset()
        used.update(q.id for q in draw_extra(questions, draw["sources"], draw["questions"], rng, exclude))
    return used


def passage_examples(examples: list[Example], long_chars: int, passage_chars: int,
                     rng: random.Random) -> list[Example]:
    """Examples whose context is longer than `long_chars` (whole papers) become a passage of about
    `passage_chars` around the answer, plus one answer-less passage of the same text as a negative;
    the others are kept as they are. Passages start and end at whitespace so no word is cut."""
    out: list[Example] = []
    for e in examples:
        text = e.context
        if len(text) <= long_chars or e.answer_start is None:
            out.append(e)
            continue
        a_start, a_end = e.answer_start, e.answer_start + len(e.answer_text)
        room = max(0, passage_chars - (a_end - a_start))
        lo = max(0, a_start - rng.randint(0, room))
        lo, hi = _snap(text, lo, min(len(text), lo + max(passage_chars, a_end - lo)))
        lo, hi = min(lo, a_start), max(hi, a_end)
        out.append(Example(e.question, text[lo:hi], a_start - lo, e.answer_text, e.origin, e.id))
        # An answer-less passage of the same paper, away from the answer.
        spots = [s for s in range(0, len(text) - passage_chars, passage_chars // 2)
                 if s + passage_chars < lo or s > hi]
        if spots:
            n_lo, n_hi = _snap(text, (s := rng.choice(spots)), s + passage_chars)
            if not holds_answer(text[n_lo:n_hi], [e.answer_text]):
                out.append(Example(e.question, text[n_lo:n_hi], None, "", "extra-negative", e.id))
    return out


def _snap(text: str, lo: int, hi: int) -> tuple[int, int]:
    """Move a span's ends outwards to the nearest whitespace (or the text's ends)."""
    while lo > 0 and not text[lo - 1].isspace():
        lo -= 1
    while hi < len(text) and not text[hi].isspace():
        hi += 1
    return lo, hi


def windows(tokenizer, examples: list[Example], max_length: int, stride: int, spans: bool = False) -> list[dict]:
    """Tokenised training windows with start/end labels ([CLS] = 0 when the answer is not inside); with
    `spans`, also each window's example index, its first and last context token and their character offsets
    (what mapping a teacher's distributions onto the window needs)."""
    out: list[dict] = []
    for i in range(0, len(examples), 512):
        batch = examples[i : i + 512]
        enc = tokenize_pairs(tokenizer, [e.question for e in batch], [e.context for e in batch], max_length, stride)
        for w, offsets in enumerate(enc["offset_mapping"]):
            k = enc["overflow_to_sample_mapping"][w]
            ex = batch[k]
            start = end = 0
            if ex.answer_start is not None or spans:
                first, last = context_range(enc.sequence_ids(w))
            if ex.answer_start is not None:
                start, end = answer_tokens(offsets, first, last, ex.answer_start, ex.answer_start + len(ex.answer_text))
            item = {"input_ids": enc["input_ids"][w], "start": start, "end": end}
            if "token_type_ids" in enc:  # BERT-style bases; MPNet has none
                item["token_type_ids"] = enc["token_type_ids"][w]
            if spans:
                item.update(example=i + k, first=first, last=last, offsets=[tuple(o) for o in offsets[first : last + 1]])
            out.append(item)
    return out


def batches(items: list[dict], batch_size: int, rng: random.Random) -> list[list[dict]]:
    """Shuffled batches of similar length (less padding, same randomness across the epoch)."""
    order = items[:]
    rng.shuffle(order)
    pool = batch_size * 50
    grouped: list[list[dict]] = []
    for i in range(0, len(order), pool):
        block = sorted(order[i : i + pool], key=_length)
        grouped += [block[j : j + batch_size] for j in range(0, len(block), batch_size)]
    rng.shuffle(grouped)
    return grouped


def _length(item: dict) -> int:
    """A window's tokens, or a group's longest window (what a batch of either is padded to)."""
    if "windows" in item:
        return max(len(w["input_ids"]) for w in item["windows"])
    return len(item["input_ids"])


def collate(batch: list[dict], pad_id: int = 0):
    """A batch of windows as padded tensors with their labels (`pad_id`: the tokenizer's padding token)."""
    import torch

    width = max(len(x["input_ids"]) for x in batch)
    ids = torch.full((len(batch), width), int(pad_id), dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for row, x in enumerate(batch):
        n = len(x["input_ids"])
        ids[row, :n] = torch.tensor(x["input_ids"])
        if "token_type_ids" in x:
            types[row, :n] = torch.tensor(x["token_type_ids"])
        mask[row, :n] = 1
    out = {
        "input_ids": ids,
        "attention_mask": mask,
        "start_positions": torch.tensor([x["start"] for x in batch]),
        "end_positions": torch.tensor([x["end"] for x in batch]),
    }
    if "token_type_ids" in batch[0]:  # a base without token types (MPNet) takes no such input
        out["token_type_ids"] = types
    return out


@dataclass
class Prepared:
    """A run's training windows and the record of what they were made from."""

    items: list[dict]
    mix: dict[str, int]
    extra_draw: dict | None
    dev: list[Question]


def prepare(config: TrainConfig, tokenizer, rng: random.Random, embedder=None) -> Prepared:
    """Every training window of the run, from the SQuAD questions, retriever negatives (found with
    `embedder`) and the extra draw."""
    if config.shared_norm:
        questions = load_squad(Path(config.train_file))
        rest, _dev = split_by_title(questions, set(DEV_TITLES))
        return _prepare_groups(config, tokenizer, embedder, questions, split_by_title(rest, set(TEST_TITLES))[0])
    examples, prep = training_examples(config, rng, embedder)
    prep.items = windows(tokenizer, examples, config.max_length, config.stride)
    if config.max_windows and len(prep.items) > config.max_windows:
        rng.shuffle(prep.items)
        prep.items = prep.items[: config.max_windows]
    return prep


def training_examples(config: TrainConfig, rng: random.Random, embedder=None) -> tuple[list[Example], Prepared]:
    """The per-window recipe's examples before tokenising (what any base's tokenizer turns into windows,
    so a teacher and its student can train on the same ones), and the record of the run's data (no items)."""
    questions = load_squad(Path(config.train_file))
    rest, _dev = split_by_title(questions, set(DEV_TITLES))
    train_qs, _test = split_by_title(rest, set(TEST_TITLES))
    examples = examples_from(train_qs, "squad")
    if config.negative_fraction > 0:
        examples += retrieved_negatives(train_qs, config.negative_fraction, rng, embedder, Settings(), config.negative_top_k)
    extra_draw = None
    if config.extra_file and config.extra_questions > 0:
        picked, extra_draw = _extra_draw(config, sum(1 for q in train_qs if q.answers))
        examples += passage_examples(examples_from(picked, "extra"), config.long_context_chars,
                                     config.passage_chars, random.Random(config.seed))
    mix = {o: sum(e.origin == o for e in examples) for o in ("squad", "squad-negative", "extra", "extra-negative")}
    mix["squad_unanswerable"] = sum(e.origin == "squad" and e.answer_start is None for e in examples)
    log.info("training examples: %s", mix)
    return examples, Prepared([], mix, extra_draw, dev_questions(questions, config.dev_questions))


def _prepare_groups(config: TrainConfig, tokenizer, embedder, questions: list[Question],
                    train_qs: list[Question]) -> Prepared:
    """The groups of a shared-normalisation run: every training SQuAD question (unanswerable ones too)
    read against the training articles, and each drawn extra question against its own source."""
    from rag.offline.training.groups import alone_groups, draw_groups_sources, group_items, retrieved_groups

    settings = Settings()
    groups, skipped = retrieved_groups(train_qs, train_qs, "squad", embedder, settings, config.group_size)
    alone_rng = random.Random(f"alone-{config.seed}")  # its own stream: the other data stay as without it
    groups += alone_groups(train_qs, "squad", config.alone_fraction, alone_rng, config.long_context_chars)
    extra_draw = None
    if config.extra_file and config.extra_questions > 0:
        picked, extra_draw = _extra_draw(config, sum(1 for q in train_qs if q.answers))
        more, lost = draw_groups_sources(load_squad(Path(config.extra_file)), picked, embedder, settings,
                                         config.group_size)
        groups, skipped = groups + more, skipped + lost
        for source in sorted({q.title.split(":")[0] for q in picked}):
            mine = [q for q in picked if q.title.split(":")[0] == source]
            groups += alone_groups(mine, f"extra:{source}", config.alone_fraction, alone_rng, config.long_context_chars)
    items = group_items(tokenizer, groups, config.max_length, config.stride, settings.max_windows_per_passage,
                        settings.max_windows_per_question)
    mix = dict(collections.Counter(item["origin"] for item in items))
    mix["windows"] = sum(len(item["windows"]) for item in items)
    mix["skipped_answer_across_chunks"] = skipped + len(groups) - len(items)
    log.info("training groups: %s", mix)
    if config.max_windows and len(items) > config.max_windows:  # a cap on groups, for smoke runs
        items = items[: config.max_windows]
    return Prepared(items, mix, extra_draw, dev_questions(questions, config.dev_questions))


def _extra_draw(config: TrainConfig, answerable_train: int) -> tuple[list[Question], dict]:
    """The run's extra questions (with `init` and `fresh_extra`, none an earlier run of the lineage used)
    and the record of the draw, from which later runs replay it."""
    extra_qs = load_squad(Path(config.extra_file))
    used: set[str] = set()
    if config.init and (config.fresh_extra or config.extra_from_used):
        lineage = lineage_of(Path(config.init))
        digest = file_sha256(Path(config.extra_file))
        for run in lineage:
            drawn_from = (run.get("extra_draw") or {}).get("extra_sha256")
            if drawn_from and drawn_from != digest:
                raise TrainingError(f"{config.extra_file} is not the file run {run.get('output')} drew from, so the "
                                    "questions it used cannot be told apart; use that file or --no-fresh-extra")
        used = replay_extra_draws(lineage, extra_qs, answerable_train)
    from_used = bool(config.init and config.extra_from_used)
    exclude = frozenset(q.id for q in extra_qs if q.id not in used) if from_used else frozenset(used)
    picked = draw_extra(extra_qs, config.extra_sources, config.extra_questions, extra_draw_rng(config.seed), exclude)
    record = {"rng": "separate", "seed": config.seed, "sources": list(config.extra_sources),
              "extra_sha256": file_sha256(Path(config.extra_file)), "from_used": from_used,
              "questions": config.extra_questions, "fresh": bool(config.init and config.fresh_extra and not from_used),
              "excluded_as_used_before": len(used), "drawn": len(picked),
              "drawn_per_source": dict(collections.Counter(q.title.split(":")[0] for q in picked))}
    return picked, record
