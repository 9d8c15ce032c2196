"""Train the accurate reader (all-mpnet-base-v2 + a LoRA adapter) and distil the fast reader (MiniLM, from
the shipped reader) from it, on an accelerator host that reaches no package index.

Two steps, because the host gets only what is carried to it (at most 64 MiB a call) and returns at most
64 MiB:
  pack  (here, on the CPU): the run's training examples, made by the project's own recipe
        (rag.offline.training.data.training_examples: SQuAD train split, retriever negatives, the extra
        questions the shipped reader's lineage already used, so the held-out ones stay held out for
        calibration), the dev questions, and an int8 copy of the MPNet base (rag.offline.training.lora)
        cut into files that fit the carry limit;
  run   (there, on the GPU): the teacher (LoRA on the int8 round trip of the base), its dev score, its
        start/end distributions over the student's windows (kept, compact: rank-k sparse), then one student
        per (temperature, weight) pair, each scored on dev; the best on dev, the adapter, the teacher's
        targets and a results.json are written to --out, each file under 16 MiB.

    python scripts/distill_on_gpu.py pack --out .gpu/pack
    python scripts/distill_on_gpu.py run --pack .gpu/pack --out $OUT --budget 500
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.offline.squad import Question  # noqa: E402
from rag.offline.training.data import Example, TrainConfig, batches, collate, training_examples, windows  # noqa: E402
from rag.offline.training.lora import adapter_state, add_lora, int8_dequantize, int8_quantize, merged_model  # noqa: E402

log = logging.getLogger("distill")
BASE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
PART_BYTES = 58 << 20  # each int8 part under the 64 MiB carry limit, with room for the rest of the tree
TOP_K = 10  # teacher probabilities kept per window, for start and for end


# --- pack (CPU) -------------------------------------------------------------------------------------------

def pack(args) -> None:
    from safetensors.numpy import load_file, save_file

    from rag.config import Settings
    from rag.offline.base_models import MPNET, resolve_split_model
    from rag.store.embedding import Embedder

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(train_file=args.train, output="build/reader-distilled", extra_file=args.extra,
                         extra_sources=["squadshifts-new_wiki", "squadshifts-reddit", "squadshifts-amazon_reviews",
                                        "fairytaleqa-train", "covidqa"],
                         extra_questions=args.extra_questions, negative_fraction=1.0, init=args.init,
                         extra_from_used=True, seed=args.seed, dev_questions=args.dev_questions)
    embedder = Embedder.from_settings(Settings()) if not args.no_negatives else None
    if args.no_negatives:
        config.negative_fraction = 0.0
    examples, prep = training_examples(config, random.Random(config.seed), embedder)
    if args.limit:
        random.Random(1).shuffle(examples)
        examples = examples[: args.limit]
    contexts: dict[str, int] = {}
    rows = [[e.question, contexts.setdefault(e.context, len(contexts)), e.answer_start, e.answer_text, e.origin, e.id]
            for e in examples]
    dev = [asdict(q) for q in prep.dev]
    with gzip.open(out / "examples.json.gz", "wt", encoding="utf-8") as f:
        json.dump({"contexts": list(contexts), "examples": rows, "dev": dev, "config": asdict(config),
                   "mix": prep.mix, "extra_draw": prep.extra_draw}, f)
    base = Path(resolve_split_model(MPNET.name))
    packed = int8_quantize(load_file(base / "model.safetensors"))
    part, size, n = {}, 0, 0
    for name in sorted(packed):
        if part and size + packed[name].nbytes > PART_BYTES:
            save_file(part, out / f"base-int8-{n}.safetensors")
            part, size, n = {}, 0, n + 1
        part[name] = np.ascontiguousarray(packed[name])
        size += packed[name].nbytes
    save_file(part, out / f"base-int8-{n}.safetensors")
    for name in BASE_FILES:
        if (base / name).is_file():
            (out / name).write_bytes((base / name).read_bytes())
    log.info("%d examples over %d contexts, %d dev questions; mix %s", len(rows), len(contexts), len(dev), prep.mix)


# --- run (GPU) --------------------------------------------------------------------------------------------

class Clock:
    def __init__(self, budget: float):
        self.start, self.budget = time.time(), budget

    def left(self) -> float:
        return self.budget - (time.time() - self.start)


def load_pack(folder: Path):
    with gzip.open(folder / "examples.json.gz", "rt", encoding="utf-8") as f:
        data = json.load(f)
    ctx = data["contexts"]
    examples = [Example(q, ctx[c], a, t, o, i) for q, c, a, t, o, i in data["examples"]]
    dev = [Question(**{**q, "answers": tuple(q["answers"]), "answer_starts": tuple(q["answer_starts"])}) for q in data["dev"]]
    return data, examples, dev


def base_folder(pack_dir: Path, work: Path) -> Path:
    """The MPNet base rebuilt from its int8 copy, as a model folder transformers loads."""
    from safetensors.numpy import load_file, save_file

    packed = {}
    for part in sorted(pack_dir.glob("base-int8-*.safetensors")):
        packed.update(load_file(part))
    work.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in int8_dequantize(packed).items()}, work / "model.safetensors")
    for name in BASE_FILES:
        if (pack_dir / name).is_file():
            (work / name).write_bytes((pack_dir / name).read_bytes())
    return work


def train_loop(model, items, *, epochs, lr, batch_size, device, deadline, pad_id, loss_fn=None, seed=0, what=""):
    """AdamW with linear warm-up and decay over `epochs`; stops early (logged) at `deadline` (time.time())."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    rest = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    rng = random.Random(seed)
    per_epoch = math.ceil(len(items) / batch_size)
    total = int(per_epoch * epochs)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * total), total)
    model.train()
    step, losses, started = 0, [], time.time()
    while step < total:
        for batch in batches(items, batch_size, rng):
            if step >= total:
                break
            if time.time() >= deadline:
                log.warning("%s: stopped by the time budget at step %d of %d", what, step, total)
                return {"steps": step, "planned_steps": total, "seconds": time.time() - started,
                        "loss": float(np.mean(losses[-50:])) if losses else None}
            inputs = {k: v.to(device, non_blocking=True) for k, v in collate(batch, pad_id).items()}
            with torch.autocast("cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16, enabled=device == "cuda"):
                if loss_fn is None:
                    loss = model(**inputs).loss
                else:
                    loss = loss_fn(model, inputs, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()) if step % 20 == 0 else losses[-1] if losses else float(loss.detach()))
            step += 1
            if step % 200 == 0:
                log.info("%s step %d/%d loss %.3f (%.0f s)", what, step, total, np.mean(losses[-50:]), time.time() - started)
    return {"steps": step, "planned_steps": total, "seconds": round(time.time() - started, 1),
            "loss": float(np.mean(losses[-50:])) if losses else None}


def gold_eval(model, folder: Path, dev, device) -> dict:
    """The project's dev metric (rag.offline.training.loop.evaluate_gold, the one reader_meta.json records)
    with the forward pass on the accelerator."""
    import torch

    from rag.config import Settings
    from rag.offline.training.loop import evaluate_gold
    from rag.reader.model import Reader

    reader = Reader.from_settings(Settings(reader_model=str(folder)))
    reader.attach(model)
    inputs = sorted(reader._inputs)

    def forward(batch):
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            out = model(**{n: torch.from_numpy(v).to(device) for n, v in batch.items() if n in inputs})
        return out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()

    reader._forward = forward
    reader.batch_size = 128
    model.to(device)
    model.eval()
    metrics = evaluate_gold(reader, dev)
    return {"forced_f1": round(metrics["forced_answer"]["f1"], 2), "best_margin": metrics["best_margin"],
            "at_best_margin_f1": round(metrics["at_best_margin"]["f1"], 2),
            "at_margin_0_f1": round(metrics["at_margin_0"]["f1"], 2), "metrics": metrics}


def merged_teacher(base: Path, lora_model, alpha: float, folder: Path, tokenizer):
    """The teacher as a plain model (adapter merged), saved with its tokenizer so a Reader can load it."""
    plain = merged_model(str(base), adapter_state(lora_model), alpha)
    folder.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return plain


def student_owner(offsets, first: int, a: int, b: int) -> np.ndarray:
    """For each character of the span [a, b): the student token holding it (the characters between two
    tokens, white space, belong to the next one)."""
    owner = np.full(b - a, -1, dtype=np.int32)
    for j, (lo, hi) in enumerate(offsets):
        owner[max(0, lo - a) : max(0, hi - a)] = first + j
    nxt = first + len(offsets) - 1
    for c in range(len(owner) - 1, -1, -1):
        if owner[c] < 0:
            owner[c] = nxt
        else:
            nxt = owner[c]
    return owner


def sparse_target(logits: np.ndarray, to: np.ndarray, temperature: float, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's softmax at `temperature`, summed onto the student positions `to`, as its TOP_K
    largest entries (positions int16, probabilities fp16, renormalised)."""
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    dense = np.zeros(width, dtype=np.float64)
    np.add.at(dense, to, p / p.sum())
    top = np.argsort(-dense, kind="stable")[:TOP_K]
    val = dense[top]
    if len(top) < TOP_K:  # a window narrower than TOP_K: padded with zero-probability [CLS] entries
        top, val = np.pad(top, (0, TOP_K - len(top))), np.pad(val, (0, TOP_K - len(top)))
    return top.astype(np.int16), (val / max(val.sum(), 1e-12)).astype(np.float16)


def teacher_targets(teacher, t_tok, examples, items, temperatures, device, batch_size=128):
    """For each student window: the teacher's start and end distributions at each temperature, read on the
    same context span and mapped onto the student's tokens (a teacher token counts for the student token
    holding its first character, or its last for an end); [CLS] for no answer. Rank-TOP_K sparse."""
    import torch

    out = {t: {"s_idx": [], "s_p": [], "e_idx": [], "e_p": []} for t in temperatures}
    teacher.to(device).eval()
    for i in range(0, len(items), batch_size):
        part = items[i : i + batch_size]
        spans = [(it["offsets"][0][0], it["offsets"][-1][1]) for it in part]
        ctxs = [examples[it["example"]].context[a:b] for it, (a, b) in zip(part, spans)]
        qs = [examples[it["example"]].question.strip() for it in part]
        enc = t_tok(qs, ctxs, truncation="only_second", max_length=384, padding=True, return_offsets_mapping=True,
                    return_tensors="pt")
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            res = teacher(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device))
        s_log, e_log = res.start_logits.float().cpu().numpy(), res.end_logits.float().cpu().numpy()
        for row, (it, (a, b)) in enumerate(zip(part, spans)):
            seq = enc.sequence_ids(row)
            offs = enc["offset_mapping"][row].numpy()
            ctx_tok = [j for j, s in enumerate(seq) if s == 1]
            owner = student_owner(it["offsets"], it["first"], a, b)
            keep = [0] + ctx_tok
            s_to = [0] + [int(owner[min(len(owner) - 1, offs[j][0])]) for j in ctx_tok]
            e_to = [0] + [int(owner[min(len(owner) - 1, max(0, offs[j][1] - 1))]) for j in ctx_tok]
            for t in temperatures:
                for logits, to, key in ((s_log[row], s_to, "s"), (e_log[row], e_to, "e")):
                    idx, val = sparse_target(logits[keep], np.asarray(to), t, len(it["input_ids"]))
                    out[t][f"{key}_idx"].append(idx)
                    out[t][f"{key}_p"].append(val)
    return {t: {k: np.stack(v) for k, v in d.items()} for t, d in out.items()}


def distill_loss(temperature, weight, targets):
    """(1 - weight) x the gold cross-entropy + weight x T^2 x KL(teacher || student at temperature T)."""
    import torch
    import torch.nn.functional as F

    def loss_fn(model, inputs, batch):
        out = model(**inputs)
        idx = torch.tensor(np.stack([targets["s_idx"][x["row"]] for x in batch]).astype(np.int64), device=out.start_logits.device)
        s_p = torch.tensor(np.stack([targets["s_p"][x["row"]] for x in batch]).astype(np.float32), device=idx.device)
        e_idx = torch.tensor(np.stack([targets["e_idx"][x["row"]] for x in batch]).astype(np.int64), device=idx.device)
        e_p = torch.tensor(np.stack([targets["e_p"][x["row"]] for x in batch]).astype(np.float32), device=idx.device)
        soft = 0.0
        for logits, ix, p in ((out.start_logits, idx, s_p), (out.end_logits, e_idx, e_p)):
            logp = F.log_softmax(logits.float() / temperature, dim=-1).gather(1, ix)
            soft = soft - (p * logp).sum(dim=1).mean()
        soft = soft / 2 * temperature**2
        return (1 - weight) * out.loss.float() + weight * soft

    return loss_fn


def save_student(student, out: Path) -> None:
    """The student's fp16 weights in files under 16 MiB (the word embeddings cut by rows): student-N."""
    from safetensors.numpy import save_file

    for old in out.glob("student-*.safetensors"):
        old.unlink()
    parts, part, size = [], {}, 0
    for name, value in student.state_dict().items():
        value = value.detach().half().cpu().numpy()
        pieces = np.array_split(value, 2) if value.nbytes > 12 << 20 else [value]
        for n, piece in enumerate(pieces):
            key = f"{name}::{n}" if len(pieces) > 1 else name
            if size + piece.nbytes > 15 << 20:
                parts.append(part)
                part, size = {}, 0
            part[key] = np.ascontiguousarray(piece)
            size += piece.nbytes
    parts.append(part)
    for n, part in enumerate(parts):
        save_file(part, out / f"student-{n}.safetensors")


def run(args) -> None:
    import torch
    from safetensors.numpy import save_file
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    clock = Clock(args.budget)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "args": vars(args)}

    def save_results():
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))

    torch.manual_seed(args.seed)
    data, examples, dev = load_pack(Path(args.pack))
    results["mix"], results["examples"] = data["mix"], len(examples)
    work = Path(args.work)
    base = base_folder(Path(args.pack), work / "base")
    t_tok = AutoTokenizer.from_pretrained(base)
    # teacher
    t_items = windows(t_tok, examples, args.max_length, args.stride)
    log.info("teacher: %d windows", len(t_items))
    teacher = AutoModelForQuestionAnswering.from_pretrained(base, dtype=torch.float32)
    wrapped = add_lora(teacher, args.rank, args.alpha)
    teacher.to(device)
    trainable = sum(p.numel() for p in teacher.parameters() if p.requires_grad)
    results["teacher"] = {"windows": len(t_items), "lora_layers": len(wrapped), "trainable": trainable,
                          "rank": args.rank, "alpha": args.alpha, "lr": args.teacher_lr, "epochs": args.teacher_epochs}
    results["teacher"]["train"] = train_loop(
        teacher, t_items, epochs=args.teacher_epochs, lr=args.teacher_lr, batch_size=args.batch_size, device=device,
        deadline=time.time() + clock.left() - args.reserve, pad_id=t_tok.pad_token_id, seed=args.seed, what="teacher")
    adapter = adapter_state(teacher)
    save_file({k: v.half().numpy() for k, v in adapter.items()}, out / "mpnet-adapter.safetensors")
    save_results()
    plain = merged_teacher(base, teacher, args.alpha, work / "teacher", t_tok).to(device)
    del teacher
    results["teacher"]["dev"] = gold_eval(plain, work / "teacher", dev, device)
    results["teacher"]["dev"].pop("metrics")
    log.info("teacher dev: %s", results["teacher"]["dev"])
    save_results()
    # student windows and the teacher's targets on them
    s_folder = Path(args.student_init)
    s_tok = AutoTokenizer.from_pretrained(s_folder)
    s_items = windows(s_tok, examples, args.max_length, args.stride, spans=True)
    for row, it in enumerate(s_items):
        it["row"] = row
    temps = sorted({t for t, _ in args.pairs})
    t1 = time.time()
    targets = teacher_targets(plain, t_tok, examples, s_items, temps, device)
    results["targets"] = {"windows": len(s_items), "seconds": round(time.time() - t1, 1), "temperatures": temps}
    save_file({f"T{t}.{k}": v for t, d in targets.items() for k, v in d.items()}, out / "teacher-targets.safetensors")
    save_results()
    del plain
    torch.cuda.empty_cache() if device == "cuda" else None
    for it in s_items:
        for k in ("offsets", "first", "last", "example"):
            it.pop(k)
    # students
    results["students"] = []
    best = None
    for temperature, weight in args.pairs:
        left = clock.left() - 25
        if left < 30:
            log.warning("no time left for the student T=%s w=%s", temperature, weight)
            break
        torch.manual_seed(args.seed)
        student = AutoModelForQuestionAnswering.from_pretrained(s_folder, dtype=torch.float32).to(device)
        train = train_loop(student, s_items, epochs=args.student_epochs, lr=args.student_lr, batch_size=args.batch_size,
                           device=device, deadline=time.time() + min(left, args.student_seconds), pad_id=s_tok.pad_token_id,
                           loss_fn=distill_loss(temperature, weight, targets[temperature]), seed=args.seed,
                           what=f"student T={temperature} w={weight}")
        folder = work / f"student-T{temperature}-w{weight}"
        student.save_pretrained(folder)
        s_tok.save_pretrained(folder)
        score = gold_eval(student, folder, dev, device)
        score.pop("metrics")
        record = {"temperature": temperature, "weight": weight, "lr": args.student_lr, "train": train, "dev": score}
        results["students"].append(record)
        log.info("student T=%s w=%s: %s", temperature, weight, score)
        if best is None or score["at_best_margin_f1"] > best["dev"]["at_best_margin_f1"]:
            best = record
            save_student(student, out)
        results["best_student"] = best and {"temperature": best["temperature"], "weight": best["weight"]}
        save_results()
        del student
    results["seconds"] = round(time.time() - clock.start, 1)
    save_results()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--out", required=True)
    a.add_argument("--train", default="../shared/data/reader-train.squad2.json")
    a.add_argument("--extra", default="../shared/data/reader-train-extra.squad2.json")
    a.add_argument("--init", default="rag/models/reader")
    a.add_argument("--extra-questions", type=int, default=40000)
    a.add_argument("--seed", type=int, default=61)
    a.add_argument("--dev-questions", type=int, default=0)
    a.add_argument("--limit", type=int, default=0, help="keep this many examples (a smoke run)")
    a.add_argument("--no-negatives", action="store_true", help="skip retriever negatives (a smoke run)")
    r = sub.add_parser("run")
    r.add_argument("--pack", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--work", default="/tmp/distill-work")
    r.add_argument("--student-init", default="rag/models/reader")
    r.add_argument("--budget", type=float, default=500, help="seconds for the whole run")
    r.add_argument("--reserve", type=float, default=230, help="seconds kept for what follows the teacher")
    r.add_argument("--rank", type=int, default=16)
    r.add_argument("--alpha", type=float, default=32)
    r.add_argument("--teacher-lr", type=float, default=4e-4)
    r.add_argument("--teacher-epochs", type=float, default=2.0)
    r.add_argument("--student-lr", type=float, default=5e-5)
    r.add_argument("--student-epochs", type=float, default=2.0)
    r.add_argument("--student-seconds", type=float, default=60)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--max-length", type=int, default=256)
    r.add_argument("--stride", type=int, default=96)
    r.add_argument("--seed", type=int, default=61)
    r.add_argument("--pair", dest="pairs", action="append", type=lambda s: tuple(float(x) for x in s.split(",")),
                   help="TEMPERATURE,WEIGHT of a student (repeatable)")
    args = p.parse_args()
    if args.cmd == "pack":
        pack(args)
    else:
        args.pairs = args.pairs or [(2.0, 0.5), (1.0, 0.5), (2.0, 0.8)]
        run(args)


if __name__ == "__main__":
    main()
