"""Fine-tune the extractive reader on SQuAD 2.0-format data (`rag train-reader`).

Recipe: sliding windows with offset mapping, unanswerable windows labelled at [CLS], answerable questions
also paired with passages the project's own retriever returns for them that do not hold the answer
(labelled unanswerable, since that is what open-domain answering feeds the reader), an article-disjoint
development split, and the no-answer margin chosen on that split. Writes a normal Hugging Face folder
(fp16 safetensors) plus reader_meta.json with the settings, the data hashes and the dev metrics.
"""
from __future__ import annotations

import collections
import json
import logging
import math
import random
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rag.config import PACKAGED_EMBEDDER, REPO_DIR, Settings
from rag.embedding import resolve_embedding_model
from rag.errors import RagError
from rag.offline.squad import (
    DEV_TITLES,
    TEST_TITLES,
    Question,
    file_sha256,
    gold_passage,
    load_squad,
    score_prediction,
    split_by_title,
    squad_corpus,
)
from rag.reader import ONNX_FILE, Reader, load_reader_meta, tokenize_pairs, write_reader_meta
from rag.text import normalize_answer

log = logging.getLogger(__name__)

CPU_NOTE = ("trained on the CPU named in hardware, without a GPU: a run shortened to fit (see config); "
            "the README names the longer run to make on a GPU")


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
    bf16: bool = False  # bfloat16 autocast for the forward pass (master weights stay fp32); faster on AVX512-BF16 CPUs and GPUs
    dev_questions: int = 0  # 0: the whole development split; fewer for a quick smoke run
    init: str | None = None  # continue from this reader (QA head kept); its lineage carries on
    fresh_extra: bool = True  # with init: draw only extra questions no earlier run of the lineage used
    long_context_chars: int = 3000  # longer contexts (CovidQA's whole papers) are cut into passages
    passage_chars: int = 1200  # the size of those passages
    checkpoint_minutes: float = 10.0  # a full, resumable checkpoint this often


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

    from rag.index import memory_index
    from rag.retrieval import Retriever

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
                if passage.chunk.source != gold and not any(a.lower() in text.lower() for a in q.answers):
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
            if e.answer_text not in text[n_lo:n_hi]:
                out.append(Example(e.question, text[n_lo:n_hi], None, "", "extra-negative", e.id))
    return out


def _snap(text: str, lo: int, hi: int) -> tuple[int, int]:
    """Move a span's ends outwards to the nearest whitespace (or the text's ends)."""
    while lo > 0 and not text[lo - 1].isspace():
        lo -= 1
    while hi < len(text) and not text[hi].isspace():
        hi += 1
    return lo, hi


def windows(tokenizer, examples: list[Example], max_length: int, stride: int) -> list[dict]:
    """Tokenised training windows with start/end labels ([CLS] = 0 when the answer is not inside)."""
    out: list[dict] = []
    for i in range(0, len(examples), 512):
        batch = examples[i : i + 512]
        enc = tokenize_pairs(tokenizer, [e.question for e in batch], [e.context for e in batch], max_length, stride)
        for w, offsets in enumerate(enc["offset_mapping"]):
            ex = batch[enc["overflow_to_sample_mapping"][w]]
            seq = enc.sequence_ids(w)
            start = end = 0
            if ex.answer_start is not None:
                a_start, a_end = ex.answer_start, ex.answer_start + len(ex.answer_text)
                first = seq.index(1)
                last = len(seq) - 1 - seq[::-1].index(1)
                if offsets[first][0] <= a_start and offsets[last][1] >= a_end:
                    start = first
                    while start <= last and offsets[start][0] <= a_start:
                        start += 1
                    start -= 1
                    end = last
                    while end >= first and offsets[end][1] >= a_end:
                        end -= 1
                    end += 1
            out.append({
                "input_ids": enc["input_ids"][w],
                "token_type_ids": enc["token_type_ids"][w],
                "start": start,
                "end": end,
            })
    return out


def batches(items: list[dict], batch_size: int, rng: random.Random) -> list[list[dict]]:
    """Shuffled batches of similar length (less padding, same randomness across the epoch)."""
    order = items[:]
    rng.shuffle(order)
    pool = batch_size * 50
    grouped: list[list[dict]] = []
    for i in range(0, len(order), pool):
        block = sorted(order[i : i + pool], key=lambda x: len(x["input_ids"]))
        grouped += [block[j : j + batch_size] for j in range(0, len(block), batch_size)]
    rng.shuffle(grouped)
    return grouped


def collate(batch: list[dict]):
    import torch

    width = max(len(x["input_ids"]) for x in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for row, x in enumerate(batch):
        n = len(x["input_ids"])
        ids[row, :n] = torch.tensor(x["input_ids"])
        types[row, :n] = torch.tensor(x["token_type_ids"])
        mask[row, :n] = 1
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": mask,
        "start_positions": torch.tensor([x["start"] for x in batch]),
        "end_positions": torch.tensor([x["end"] for x in batch]),
    }


def best_answer(reader: Reader, questions: list[Question]) -> list[tuple[str, float]]:
    """For each question read in its gold paragraph: (best span text, best span score - null score)."""
    from tqdm import tqdm

    results: list[tuple[str, float]] = []
    step = 64
    for i in tqdm(range(0, len(questions), step), desc="dev (gold paragraph)", unit="batch"):
        part = questions[i : i + step]
        for reading in reader.read_pairs([q.question for q in part], [q.context for q in part]):
            if reading.spans:
                results.append((reading.spans[0].text, reading.spans[0].score - reading.null_score))
            else:
                results.append(("", -math.inf))
    return results


def squad2_metrics(questions: list[Question], predictions: list[str | None]) -> dict[str, float]:
    """EM, F1, HasAns F1 and NoAns accuracy (percent) of predictions (None = abstain)."""
    scores = [score_prediction(p, q.answers) for q, p in zip(questions, predictions)]
    has = [s for q, s in zip(questions, scores) if q.answers]
    no = [s for q, s in zip(questions, scores) if not q.answers]
    mean = lambda xs: 100.0 * sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    return {
        "exact_match": mean([s[0] for s in scores]),
        "f1": mean([s[1] for s in scores]),
        "has_answer_f1": mean([s[1] for s in has]),
        "no_answer_accuracy": mean([s[0] for s in no]),
        "n": len(questions),
    }


def evaluate_gold(reader: Reader, questions: list[Question]) -> dict:
    """Reader-only metrics on gold paragraphs, with the no-answer margin that maximises dev F1."""
    read = best_answer(reader, questions)
    forced = squad2_metrics([q for q in questions if q.answers], [t for (t, _), q in zip(read, questions) if q.answers])
    best_margin, best = 0.0, None
    for margin in sorted({round(m, 2) for _, m in read if math.isfinite(m)} | {0.0}):
        metrics = squad2_metrics(questions, [t if m > margin else None for t, m in read])
        if best is None or metrics["f1"] > best["f1"]:
            best_margin, best = margin, metrics
    at_zero = squad2_metrics(questions, [t if m > 0 else None for t, m in read])
    return {"forced_answer": forced, "at_margin_0": at_zero, "best_margin": best_margin, "at_best_margin": best}


CHECKPOINT_DIR = "checkpoint"


class TrainingError(RagError):
    """A training run cannot start or resume as asked."""


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
    questions = load_squad(Path(config.train_file))
    rest, dev = split_by_title(questions, set(DEV_TITLES))
    train_qs, _test = split_by_title(rest, set(TEST_TITLES))
    if config.dev_questions:
        dev = dev[:: max(1, len(dev) // config.dev_questions)][: config.dev_questions]
    examples = examples_from(train_qs, "squad")
    if config.negative_fraction > 0:
        examples += retrieved_negatives(train_qs, config.negative_fraction, rng, embedder, Settings(), config.negative_top_k)
    extra_draw = None
    if config.extra_file and config.extra_questions > 0:
        extra_qs = load_squad(Path(config.extra_file))
        used: set[str] = set()
        if config.init and config.fresh_extra:
            answerable = sum(1 for q in train_qs if q.answers)
            lineage = lineage_of(Path(config.init))
            digest = file_sha256(Path(config.extra_file))
            for run in lineage:
                drawn_from = (run.get("extra_draw") or {}).get("extra_sha256")
                if drawn_from and drawn_from != digest:
                    raise TrainingError(f"{config.extra_file} is not the file run {run.get('output')} drew from, so the "
                                        "questions it used cannot be told apart; use that file or --no-fresh-extra")
            used = replay_extra_draws(lineage, extra_qs, answerable)
        picked = draw_extra(extra_qs, config.extra_sources, config.extra_questions, extra_draw_rng(config.seed),
                            frozenset(used))
        extra_draw = {"rng": "separate", "seed": config.seed, "sources": list(config.extra_sources),
                      "extra_sha256": file_sha256(Path(config.extra_file)),
                      "questions": config.extra_questions, "fresh": bool(config.init and config.fresh_extra),
                      "excluded_as_used_before": len(used), "drawn": len(picked),
                      "drawn_per_source": dict(collections.Counter(q.title.split(":")[0] for q in picked))}
        examples += passage_examples(examples_from(picked, "extra"), config.long_context_chars,
                                     config.passage_chars, random.Random(config.seed))
    mix = {o: sum(e.origin == o for e in examples) for o in ("squad", "squad-negative", "extra", "extra-negative")}
    mix["squad_unanswerable"] = sum(e.origin == "squad" and e.answer_start is None for e in examples)
    log.info("training examples: %s", mix)
    items = windows(tokenizer, examples, config.max_length, config.stride)
    if config.max_windows and len(items) > config.max_windows:
        rng.shuffle(items)
        items = items[: config.max_windows]
    return Prepared(items, mix, extra_draw, dev)


@dataclass
class TrainResult:
    """A finished run: the metadata written beside the model, and the loaded reader and embedder (if one
    was needed), for calibration to reuse instead of loading them again."""

    meta: dict
    reader: Reader
    embedder: object | None


def train(config: TrainConfig, resume: bool = False, stop_after: int | None = None) -> TrainResult | None:
    """Run the recipe, write the model folder and evaluate it on the dev gold paragraphs; calibration is a
    separate step (calibrate_reader) that can take the loaded reader and embedder from the result.

    A full checkpoint (weights, optimizer, schedule, data order, random state) is written to
    `output/checkpoint/` every `checkpoint_minutes`; `resume=True` continues from it exactly. `stop_after`
    ends the run after that many steps with a checkpoint (a cut-off run, for tests) and returns None."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, get_linear_schedule_with_warmup

    out = Path(config.output)
    ckpt = out / CHECKPOINT_DIR
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    base = str(Path(config.init)) if config.init else resolve_embedding_model(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForQuestionAnswering.from_pretrained(base, dtype=torch.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    state = _read_checkpoint_state(ckpt) if resume else None
    embedder = None
    if state is not None:
        prep = Prepared(_read_items(ckpt), state["mix"], state["extra_draw"], _dev_questions(config))
    else:
        embedder = None
        if config.negative_fraction > 0:
            from rag.embedding import Embedder

            embedder = Embedder.from_settings(Settings())
        prep = prepare(config, tokenizer, rng, embedder)
        (ckpt / "state.json").unlink(missing_ok=True)  # a fresh run: an older run's state must never be resumed
        _write_items(ckpt, prep.items)
    items = prep.items
    # The lineage of the reader this run starts from, read now (a resumed run keeps the one read at its
    # start): the init folder's base may be replaced while the run goes on, e.g. by shipping.
    init_lineage = (state.get("init_lineage") if state else None)
    if init_lineage is None:
        init_lineage = lineage_of(Path(config.init)) if config.init else []
    steps_per_epoch = math.ceil(len(items) / config.batch_size)
    total_steps = max(1, int(steps_per_epoch * config.epochs))
    log.info("%d windows, %d steps", len(items), total_steps)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total_steps), total_steps)
    step, epoch, position, losses, seconds_before = 0, 0, 0, [], 0.0
    epoch_rng = rng.getstate()
    model.to(device)  # before the optimizer state is loaded, so its moments land on the same device
    if state is not None:
        if state.get("windows") != len(items):
            raise TrainingError(f"the checkpoint in {ckpt} does not match its windows file; start the run again")
        _load_checkpoint(ckpt, state, model, optimizer, schedule)
        step, epoch, position, losses = state["step"], state["epoch"], state["position"], state["losses"]
        seconds_before = state["train_seconds"]
        epoch_rng = _rng_state(state["epoch_rng"])
        log.info("resumed from %s at step %d of %d", ckpt, step, total_steps)
    command = state["command"] if state else " ".join(shlex.quote(a) for a in sys.argv)
    started = last_save = time.time()

    def save() -> None:
        _write_checkpoint(ckpt, model, optimizer, schedule, {
            "config": asdict(config), "command": command, "step": step, "epoch": epoch, "position": position, "losses": losses,
            "epoch_rng": epoch_rng, "torch_rng": torch.get_rng_state().tolist(),
            "train_seconds": seconds_before + time.time() - started, "mix": prep.mix,
            "extra_draw": prep.extra_draw, "windows": len(items), "init_lineage": init_lineage,
        })

    model.train()
    with tqdm(total=total_steps, initial=step, desc="training", unit="step") as bar:
        while step < total_steps:
            rng.setstate(epoch_rng)
            order = batches(items, config.batch_size, rng)
            for batch in order[position:]:
                inputs = {k: v.to(device) for k, v in collate(batch).items()}
                with torch.autocast(device, dtype=torch.bfloat16, enabled=config.bf16):
                    loss = model(**inputs).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                losses.append(float(loss.detach()))
                step += 1
                position += 1
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
                if step >= total_steps:
                    break
                if stop_after is not None and step >= stop_after:
                    save()
                    return None
                if time.time() - last_save >= config.checkpoint_minutes * 60:
                    save()
                    last_save = time.time()
            if position >= len(order):
                epoch, position = epoch + 1, 0
                epoch_rng = rng.getstate()
    train_seconds = seconds_before + time.time() - started

    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.half().cpu().save_pretrained(out)
    tokenizer.save_pretrained(out)
    reader = Reader.from_settings(Settings(reader_model=str(out)))
    reader.attach(model)  # the fp16-rounded weights just saved, as a load would give them
    dev_metrics = evaluate_gold(reader, prep.dev)
    run = {
        "command": command,
        "output": config.output,
        "init": config.init,
        "mix": prep.mix,
        "windows": len(items),
        "epochs": config.epochs,
        "learning_rate": config.learning_rate,
        "steps": total_steps,
        "train_seconds": round(train_seconds, 1),
        "hardware": _hardware(),
        "extra_draw": prep.extra_draw,
        "dev": {"gold_forced_f1": round(dev_metrics["forced_answer"]["f1"], 2)},
    }
    lineage = init_lineage + [run]
    meta = {
        "description": "Extractive QA reader: QA head fine-tuned on all-MiniLM-L6-v2 (stored fp16, run in fp32).",
        "train_command": run["command"],
        "config": asdict(config),
        "data": {
            "train_sha256": file_sha256(Path(config.train_file)),
            "extra_sha256": file_sha256(Path(config.extra_file)) if config.extra_file else None,
            "dev_titles": sorted(DEV_TITLES),
            "test_titles": sorted(TEST_TITLES),
            "mix": prep.mix,
            "windows": len(items),
        },
        "hardware": run["hardware"],
        "compute_note": CPU_NOTE if device == "cpu" else "trained on a GPU",
        "train_seconds": run["train_seconds"],
        "steps": total_steps,
        "final_loss": round(float(np.mean(losses[-50:])), 4),
        "dev_gold_paragraph": dev_metrics,
        "null_margin": dev_metrics["best_margin"],
        "lineage": lineage,
        "lineage_totals": lineage_totals(lineage),
        "licence": "Trained on SQuAD 2.0 (CC BY-SA 4.0) and the extra sets listed in shared/data/README.md.",
    }
    write_reader_meta(out, meta)
    reader.meta = meta
    shutil.rmtree(ckpt, ignore_errors=True)  # the run is complete and recorded: the model folder is what is kept
    (out / ONNX_FILE).unlink(missing_ok=True)  # an export of earlier weights would no longer match
    return TrainResult(meta, reader, embedder)


def resume_training(output: Path, stop_after: int | None = None) -> TrainResult | None:
    """Continue the run whose checkpoint is in `output/checkpoint/`, with the settings it was started with."""
    state = _read_checkpoint_state(Path(output) / CHECKPOINT_DIR)
    if state is None:
        raise TrainingError(f"no training checkpoint in {Path(output) / CHECKPOINT_DIR}")
    # The folder given wins over the one recorded: a checkpoint may have been moved (e.g. out of build/).
    config = TrainConfig(**{**state["config"], "output": str(output)})
    return train(config, resume=True, stop_after=stop_after)


def _dev_questions(config: TrainConfig) -> list[Question]:
    _, dev = split_by_title(load_squad(Path(config.train_file)), set(DEV_TITLES))
    if config.dev_questions:
        dev = dev[:: max(1, len(dev) // config.dev_questions)][: config.dev_questions]
    return dev


def lineage_of(model_dir: Path, _depth: int = 0) -> list[dict]:
    """Every run that led to the reader in `model_dir`, oldest first. Readers from before lineages were
    recorded get one entry built from their metadata, after their base reader's lineage when the base
    was a reader folder (`--base-model rag/models/reader`, as for v3)."""
    meta = load_reader_meta(model_dir)
    if not meta:
        return []
    if "lineage" in meta:
        return meta["lineage"]
    config = meta.get("config", {})
    earlier: list[dict] = []
    base = config.get("base_model")
    if base and base != PACKAGED_EMBEDDER and _depth < 10:
        for candidate in (Path(base), REPO_DIR / base):
            base_meta = load_reader_meta(candidate)
            if not base_meta:
                continue
            if base_meta.get("train_command") == meta.get("train_command"):
                # The base folder now holds this very reader (it was shipped there): its recorded lineage,
                # if it has one, is this reader's.
                if "lineage" in base_meta:
                    return base_meta["lineage"]
                break
            earlier = lineage_of(candidate, _depth + 1)
            break
    report = meta.get("calibration_report", {})
    extra = config.get("extra_questions", 0) if config.get("extra_file") else 0
    return earlier + [{
        "command": meta.get("train_command"),
        "output": config.get("output"),
        "init": base if base != PACKAGED_EMBEDDER else None,
        "mix": meta.get("data", {}).get("mix"),
        "windows": meta.get("data", {}).get("windows"),
        "epochs": config.get("epochs"),
        "learning_rate": config.get("learning_rate"),
        "steps": meta.get("steps"),
        "train_seconds": meta.get("train_seconds"),
        "hardware": meta.get("hardware"),
        "extra_draw": {"rng": "shared", "seed": config.get("seed"), "sources": config.get("extra_sources", []),
                       "extra_sha256": meta.get("data", {}).get("extra_sha256"),
                       "questions": extra, "negative_fraction": config.get("negative_fraction", 0), "fresh": False},
        "dev": {"gold_forced_f1": round(meta.get("dev_gold_paragraph", {}).get("forced_answer", {}).get("f1", 0), 2),
                "open_domain_f1_at_threshold": round(report.get("open_domain", {}).get("at_threshold", {}).get("f1", 0), 2)},
    }]


def lineage_totals(lineage: list[dict]) -> dict:
    """Training windows seen (windows x epochs) and steps, over every run of a lineage."""
    return {
        "runs": len(lineage),
        "windows_seen": int(sum((r.get("windows") or 0) * (r.get("epochs") or 0) for r in lineage)),
        "steps": int(sum(r.get("steps") or 0 for r in lineage)),
        "train_seconds": round(sum(r.get("train_seconds") or 0 for r in lineage), 1),
    }


def _rng_state(saved: list) -> tuple:
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)


def _write_items(ckpt: Path, items: list[dict]) -> None:
    """The run's windows, so a resumed run trains on exactly the same data without preparing it again."""
    import gzip

    ckpt.mkdir(parents=True, exist_ok=True)
    tmp = ckpt / "items.json.gz.tmp"
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(items, f, separators=(",", ":"))
    tmp.replace(ckpt / "items.json.gz")


def _read_items(ckpt: Path) -> list[dict]:
    import gzip

    with gzip.open(ckpt / "items.json.gz", "rt", encoding="utf-8") as f:
        return json.load(f)


def _write_checkpoint(ckpt: Path, model, optimizer, schedule, state: dict) -> None:
    """Weights (fp32), optimizer moments and random state in safetensors, the rest in JSON (no pickle);
    written beside the old files and renamed over them, so a crash mid-write keeps the previous one."""
    import torch
    from safetensors.torch import save_file

    ckpt.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    tensors = {f"{i}.{name}": value.detach().cpu().contiguous()
               for i, slots in opt["state"].items() for name, value in slots.items() if torch.is_tensor(value)}
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, ckpt / "model.safetensors.tmp")
    save_file(tensors, ckpt / "optimizer.safetensors.tmp")
    state = {**state, "param_groups": opt["param_groups"],
             "schedule": {k: v for k, v in schedule.state_dict().items() if k != "lr_lambdas"}}
    (ckpt / "state.json.tmp").write_text(json.dumps(state), encoding="utf-8")
    for name in ("model.safetensors", "optimizer.safetensors"):
        (ckpt / f"{name}.tmp").replace(ckpt / name)
    (ckpt / "state.json.tmp").replace(ckpt / "state.json")  # last: it names the step the others hold


def _read_checkpoint_state(ckpt: Path) -> dict | None:
    path = ckpt / "state.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _load_checkpoint(ckpt: Path, state: dict, model, optimizer, schedule) -> None:
    import torch
    from safetensors.torch import load_file

    model.load_state_dict(load_file(ckpt / "model.safetensors"))
    slots: dict[int, dict] = {}
    for key, value in load_file(ckpt / "optimizer.safetensors").items():
        i, name = key.split(".", 1)
        slots.setdefault(int(i), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state["param_groups"]})
    schedule.load_state_dict({**state["schedule"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))


def _hardware() -> str:
    import os
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def calibrate_reader(train_file: Path, model_dir: Path, min_no_answer_accuracy: float = 0.0,
                     embedder=None, reader: Reader | None = None, f1_tolerance: float | None = None) -> dict:
    """Fit the answerability model on the dev articles read open-domain (retrieved passages over all dev
    paragraphs, as in deployment) and choose its threshold (rag.calibration); record it, the threshold
    sweep, the reliability table and the metrics (open-domain and gold paragraph) in the metadata. A loaded
    embedder and reader (training's) are reused."""
    from tqdm import tqdm

    from rag.calibration import fit_with_threshold, reliability_table
    from rag.embedding import Embedder
    from rag.index import memory_index
    from rag.pipeline import Pipeline

    settings = Settings(reader_model=str(model_dir)).with_overrides(threshold_f1_tolerance=f1_tolerance)
    _, dev = split_by_title(load_squad(train_file), set(DEV_TITLES))
    embedder = embedder or Embedder.from_settings(settings)
    index = memory_index(squad_corpus(dev), embedder, settings, progress=True)
    pipeline = Pipeline.from_settings(settings, index=index, embedder=embedder, reader=reader, calibrated=False)

    rows = {"open": [], "gold": []}
    for q in tqdm(dev, desc="calibration (dev)", unit="question"):
        rows["open"].append(pipeline.judge(q.question, pipeline.retriever.run(q.question)))
        rows["gold"].append(pipeline.judge(q.question, [gold_passage(q)]))

    def labelled(judgements):
        xs, ys = [], []
        for q, j in zip(dev, judgements):
            if j.best is not None:
                xs.append(j.features)
                ys.append(bool(q.answers) and score_prediction(j.best.text, q.answers)[1] >= 0.5)
        return xs, ys

    def predictions(calibrator, judgements, threshold):
        out = []
        for j in judgements:
            p = float(calibrator.probability(j.features)[0]) if j.best is not None else 0.0
            out.append(j.best.text if j.best is not None and p >= threshold else None)
        return out

    x_open, y_open = labelled(rows["open"])
    # The operating point: the best open-domain dev F1 (or the highest threshold within
    # threshold_f1_tolerance of it), above a floor on no-answer accuracy when one is asked for.
    calibrator, sweep = fit_with_threshold(
        np.array(x_open), np.array(y_open), lambda c, t: squad2_metrics(dev, predictions(c, rows["open"], t)),
        min_no_answer_accuracy, settings.threshold_f1_tolerance)
    best_t = calibrator.threshold
    probs_open = [float(calibrator.probability(j.features)[0]) if j.best else 0.0 for j in rows["open"]]
    answerable = [q for q in dev if q.answers]
    forced = lambda js: squad2_metrics(answerable, [j.best.text if j.best else "" for q, j in zip(dev, js) if q.answers])  # noqa: E731
    report = {
        "threshold": best_t,
        "threshold_rule": (f"max open-domain dev F1 with no-answer accuracy >= {min_no_answer_accuracy}%"
                           + (f", then the highest threshold within {settings.threshold_f1_tolerance} F1 of it"
                              if settings.threshold_f1_tolerance else "")),
        "sweep_open_domain": [{"threshold": t, **{k: round(v, 1) for k, v in m.items() if k != "n"}}
                              for t, m in sweep if round(t * 100) % 5 == 0],
        "open_domain": {"passages": len(index.chunks),
                        "at_threshold": squad2_metrics(dev, predictions(calibrator, rows["open"], best_t)),
                        "forced_answer": forced(rows["open"])},
        "gold_paragraph": {"at_threshold": squad2_metrics(dev, predictions(calibrator, rows["gold"], best_t)),
                           "forced_answer": forced(rows["gold"])},
        "reliability_open_domain": reliability_table(
            np.array([p for p, j in zip(probs_open, rows["open"]) if j.best]), np.array(y_open, dtype=float)),
    }
    meta = load_reader_meta(model_dir)
    meta["calibration"] = calibrator.to_meta()
    meta["calibration_report"] = report
    meta["calibrate_command"] = (f"rag calibrate-reader --train {train_file} --model {model_dir}"
                                 + (f" --f1-tolerance {settings.threshold_f1_tolerance}" if settings.threshold_f1_tolerance else ""))
    if meta.get("lineage"):  # this run's entry records its open-domain dev F1 too
        meta["lineage"][-1].setdefault("dev", {})["open_domain_f1_at_threshold"] = round(report["open_domain"]["at_threshold"]["f1"], 2)
    write_reader_meta(model_dir, meta)
    return meta


# Study-only answerability features (`rag calibrate-reader --study`): measured, not (yet) used in serving.
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
    from rag.chunking import sentence_spans

    passage, start, _ = best.places[0]
    text = passages[passage].chunk.text
    sentence = next((text[a:b] for a, b in sentence_spans(text) if a <= start < b), text)
    asked, said = content_words(question), content_words(best.text)
    return [len(asked & content_words(sentence)) / len(asked) if asked else 0.0,
            len(said & asked) / len(said) if said else 0.0,
            type_match(question, best.text)]


def calibration_study(train_file: Path, model_dir: Path, f1_tolerance: float = 0.5) -> str:
    """What the answer-or-abstain decision would gain from each change, as a Markdown table: the calibrator
    fitted on the dev articles read open-domain with the serving features or with STUDY_FEATURES added, its
    threshold chosen on dev by the max-F1 rule or the cautious one (the highest within `f1_tolerance` F1);
    each scored on dev and on the test articles read open-domain (never used to choose anything), with the
    count of wrong answers given. Writes nothing."""
    from tqdm import tqdm

    from rag.calibration import FEATURES, choose_threshold, fit_calibrator
    from rag.embedding import Embedder
    from rag.index import memory_index
    from rag.pipeline import Pipeline

    settings = Settings(reader_model=str(model_dir))
    rest, test = split_by_title(load_squad(train_file), set(TEST_TITLES))
    _, dev = split_by_title(rest, set(DEV_TITLES))
    embedder = Embedder.from_settings(settings)
    reader = Reader.from_settings(settings)
    reads = {}
    for name, questions in (("dev", dev), ("test", test)):
        index = memory_index(squad_corpus(questions), embedder, settings)
        pipeline = Pipeline.from_settings(settings, index=index, embedder=embedder, reader=reader, calibrated=False)
        rows = []
        for q in tqdm(questions, desc=f"open-domain reads ({name})", unit="question"):
            passages = pipeline.retriever.run(q.question)
            j = pipeline.judge(q.question, passages)
            rows.append((j.best, None if j.best is None else np.concatenate([j.features, study_features(q.question, j.best, passages)])))
        reads[name] = rows

    def metrics(questions, rows, calibrator, columns, threshold):
        out = [best.text if best is not None and float(calibrator.probability(x[columns])[0]) >= threshold else None
               for best, x in rows]
        m = squad2_metrics(questions, out)
        m["wrong"] = sum(1 for q, a in zip(questions, out)
                         if a is not None and (not q.answers or score_prediction(a, q.answers)[1] < 0.5))
        return m

    n = len(FEATURES)
    feature_sets = {f"serving ({n})": list(range(n)), f"serving + {', '.join(STUDY_FEATURES)}": list(range(n + len(STUDY_FEATURES)))}
    rules = {"max dev F1": 0.0, f"highest within {f1_tolerance} of max dev F1": f1_tolerance}
    answered = [(q, best, x) for q, (best, x) in zip(dev, reads["dev"]) if best is not None]
    x = np.array([x for _, _, x in answered])
    y = np.array([bool(q.answers) and score_prediction(best.text, q.answers)[1] >= 0.5 for q, best, _ in answered])
    lines = ["| features | threshold rule | threshold | dev F1 | dev NoAns | dev wrong answers | test F1 | test NoAns | test wrong answers |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for fname, columns in feature_sets.items():
        calibrator = fit_calibrator(x[:, columns], y)
        for rname, tolerance in rules.items():
            threshold, _ = choose_threshold(lambda t, c=calibrator, k=columns: metrics(dev, reads["dev"], c, k, t),
                                            f1_tolerance=tolerance)
            d = metrics(dev, reads["dev"], calibrator, columns, threshold)
            t = metrics(test, reads["test"], calibrator, columns, threshold)
            lines.append(f"| {fname} | {rname} | {threshold:.2f} | {d['f1']:.1f} | {d['no_answer_accuracy']:.1f} | {d['wrong']}"
                         f" | {t['f1']:.1f} | {t['no_answer_accuracy']:.1f} | {t['wrong']} |")
    return "\n".join(lines)


def lineage_table(model_dir: Path) -> str:
    """The reader's lineage as a Markdown table: each run, the windows it trained on, the windows seen so far
    (windows x epochs, summed), its steps and CPU/GPU time, and its dev F1s (gold paragraph forced; open
    domain at its threshold): the learning curve of cumulative training."""
    lineage = lineage_of(Path(model_dir))
    if not lineage:
        raise TrainingError(f"{model_dir} has no reader metadata to read a lineage from")
    lines = ["| run | init | windows | windows seen (cumulative) | steps | minutes | dev gold ¶ forced F1 | dev open-domain F1 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    seen = 0.0
    for run in lineage:
        seen += (run.get("windows") or 0) * (run.get("epochs") or 0)
        dev = run.get("dev") or {}
        f = lambda v: "–" if v in (None, 0) else f"{v:.1f}"  # noqa: E731
        lines.append(f"| {run.get('output') or '?'} | {run.get('init') or '(encoder)'} | {run.get('windows') or 0:,} | "
                     f"{int(seen):,} | {run.get('steps') or 0:,} | {(run.get('train_seconds') or 0) / 60:.0f} | "
                     f"{f(dev.get('gold_forced_f1'))} | {f(dev.get('open_domain_f1_at_threshold'))} |")
    return "\n".join(lines)
