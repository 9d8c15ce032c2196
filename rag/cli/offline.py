"""The offline commands: `rag eval`, `bench`, `train-reader`, `calibrate-reader`, `lineage` and
`export-reader` (rag.offline, imported by each command as it runs)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rag.cli.common import TRAIN_CONFIG, UsageError, mapped, refuse_without, settings_from


def cmd_eval(args: argparse.Namespace) -> int:
    from rag.offline import evaluation

    settings = settings_from(args)
    if args.retrieval:
        report = evaluation.retrieval_report(settings, args.qa, ks=(1, 5))
        print(json.dumps(report, indent=2) if args.json else evaluation.format_retrieval(report))
        return 0
    if args.squad:
        report = evaluation.evaluate_squad(settings, args.squad, limit=args.limit, split=args.split)
    else:
        report = evaluation.evaluate_qa_file(settings, args.qa, rebuild=not args.no_rebuild)
    if args.report:
        evaluation.write_markdown(report, args.report)
    if args.json:
        print(json.dumps(report.metrics, indent=2))
    else:
        print(evaluation.format_table(report))
        if args.report:
            print(f"\nreport with every miss: {args.report}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from rag.offline import bench

    if args.bench == "serve":
        print(bench.run_benchmark(requests_per_level=args.requests, levels=args.concurrency, docs=args.docs,
                                  index=args.index, questions_file=args.questions, workers=args.workers))
    elif args.bench == "backends":
        print(bench.run_backend_benchmark(args.workdir, args.requests, questions_file=args.questions))
    elif args.bench == "scale":
        print(bench.run_scale_benchmark(args.squad_file, args.sizes, args.workdir, args.plot, args.requests))
    elif args.bench == "stores":
        print(bench.run_store_benchmark(args.store, args.squad_file, args.workdir, args.passages, args.requests,
                                        seeds=args.seeds, questions_file=args.questions))
    elif args.bench == "uploads":
        from rag.offline.bench import run_upload_benchmark

        print(run_upload_benchmark(args.workdir, args.store, args.rounds, args.seeds))
    elif args.bench == "incremental":
        print(bench.run_incremental_benchmark(args.squad_file, args.workdir, args.files))
    else:  # curve
        readers = []
        for spec in args.readers:
            label, _, folder = spec.rpartition("=")
            readers.append((label or Path(folder).name, Path(folder)))
        print(bench.run_learning_curve(args.squad_file, readers, args.plot, questions_file=args.questions))
    return 0


def cmd_calibrate_reader(args: argparse.Namespace) -> int:
    from rag.offline.calibrate import calibrate_reader

    if args.study:  # a measurement kept out of the package: scripts/calibration_study.py of a repository checkout
        import importlib.util

        from rag.config import REPO_DIR

        script = REPO_DIR / "scripts" / "calibration_study.py"
        if not script.is_file():
            raise UsageError(f"--study runs {script}, which this installation does not have; run "
                             "`python scripts/calibration_study.py --train … --model …` in a checkout of the repository")
        spec = importlib.util.spec_from_file_location("calibration_study", script)
        study = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(study)
        print(study.calibration_study(Path(args.train_file), Path(args.model), args.f1_tolerance or 0.5))
        return 0
    refuse_without(args, "extra_file", "--extra", removed_share="--removed-share")
    if args.feedback is not None or args.save_reads:
        return _calibrate_with_feedback(args)
    if args.output is not None:
        return _import_reader(args)
    if args.train_file is None:
        raise UsageError("--train is needed (the SQuAD 2.0 file the reader was trained on)")
    meta = calibrate_reader(Path(args.train_file), Path(args.model), f1_tolerance=args.f1_tolerance,
                            extra_file=args.extra_file, limit=args.questions, removed_share=args.removed_share)
    print(json.dumps(meta["calibration_report"], indent=2))
    return 0


def _import_reader(args: argparse.Namespace) -> int:
    """Any extractive QA model (folder or hub id) written to --output as a reader, calibrated on the dev
    articles shipped in the package (or --train's)."""
    from rag.offline.calibrate import calibrate_reader
    from rag.offline.import_reader import SHIPPED_CALIBRATION, import_reader

    questions = Path(args.train_file) if args.train_file else SHIPPED_CALIBRATION
    meta = import_reader(str(args.model), args.output, lambda folder: calibrate_reader(
        questions, folder, f1_tolerance=args.f1_tolerance, limit=args.questions))
    report = meta["calibration_report"]
    print(json.dumps({k: report[k] for k in ("threshold", "open_domain", "gold_paragraph")}, indent=2))
    print(f"wrote the reader to {args.output} (serve it with --reader {args.output})")
    return 0


def _calibrate_with_feedback(args: argparse.Namespace) -> int:
    """The reader's calibration reads plus the team's labelled questions, weighted by cross-validation, into
    --output; with --save-reads, only the reader's calibration reads are made and stored beside its weights."""
    from rag.config import Settings
    from rag.offline import feedback_calibration as fc
    from rag.offline.squad import dev_questions, load_squad
    from rag.pipeline.calibration import Calibrator
    from rag.reader.folder import resolve_reader_model
    from rag.reader.model import Reader
    from rag.store.embedding import Embedder

    model_dir = Path(resolve_reader_model(str(args.model)))
    if args.feedback is not None and args.output is None:
        raise UsageError("--feedback needs --output DIR: the refitted reader is written there, never over --model")
    if args.train_file is None and not (model_dir / fc.READS_FILE).is_file():
        raise UsageError(f"{model_dir} ships no {fc.READS_FILE}: give --train (the SQuAD file it was trained on)")
    settings = Settings(reader_model=str(args.model))
    embedder, reader = Embedder.from_settings(settings), Reader.from_settings(settings)
    reader.warm_up()
    if args.train_file is not None:
        base = fc.read_open_domain(dev_questions(load_squad(Path(args.train_file))), settings, embedder, reader)
    else:
        base = fc.Reads.load(model_dir / fc.READS_FILE)
    if args.feedback is None:  # --save-reads
        base.save(model_dir / fc.READS_FILE)
        print(f"wrote the calibration reads of {len(base.questions)} dev questions to {model_dir / fc.READS_FILE}")
        return 0
    team = fc.read_open_domain(load_squad(args.feedback), settings, embedder, reader)
    weight, table = fc.choose_weight(base, team)
    refit = fc.fit_weighted(base, team, weight)
    before = Calibrator.from_meta(reader.meta)
    report = {"feedback_file": str(args.feedback), "team_questions": len(team.questions), "base_questions": len(base.questions),
              "weight": weight, "cross_validation": table, "threshold": refit.threshold,
              "team_reads_in_sample": {"before": fc.outcome(before, team) if before else None, "after": fc.outcome(refit, team)}}
    try:
        fc.write_reader(model_dir, args.output, refit, report)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(json.dumps(report, indent=2))
    print(f"wrote the reader with the refitted calibration to {args.output} (serve it with --reader {args.output})")
    return 0


def cmd_fetch_base(args: argparse.Namespace) -> int:
    from rag.offline.base_models import fetch

    print(fetch(args.name, args.source))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from rag.offline.training import lineage_table
    from rag.reader.folder import resolve_reader_model

    print(lineage_table(Path(resolve_reader_model(args.model))))
    return 0


def cmd_export_reader(args: argparse.Namespace) -> int:
    import contextlib
    import sys

    from rag.offline.export import export_reader

    refuse_without(args, "static", "--static", keep_float="--keep-float")
    with contextlib.redirect_stdout(sys.stderr):  # ONNX Runtime's calibration prints its progress
        record = export_reader(args.model, static=args.static,
                               keep_float=1 if args.keep_float is None else args.keep_float)
    print(json.dumps(record, indent=2))
    return 0


def train_config(args: argparse.Namespace):
    """The TrainConfig of a new run: the fields the given flags set (declared by the parser beside each
    flag), the rest TrainConfig's defaults."""
    from rag.offline.training import TrainConfig

    if not args.train_file or not args.output:
        raise UsageError("--train and --output are required (or --resume DIR to continue a run)")
    refuse_without(args, "shared_norm", "--shared-norm", group_size="--group-size", null_score="--null-score",
                   alone_fraction="--alone-fraction")
    fields = mapped(args, TRAIN_CONFIG)
    if "init" in fields:
        fields["init"] = str(fields["init"])  # a Path on the command line, a str in the recorded settings
    fields["fresh_extra"] = not args.no_fresh_extra
    return TrainConfig(**fields)


def cmd_train_reader(args: argparse.Namespace) -> int:
    from rag.offline.calibrate import calibrate_reader
    from rag.offline.training import resume_training, train

    if args.resume:
        result = resume_training(Path(args.resume), stop_after=args.stop_after_steps)
    else:
        result = train(train_config(args), stop_after=args.stop_after_steps)
    if result is None:
        print(f"stopped with a checkpoint; continue with `rag train-reader --resume {args.resume or args.output}`")
        return 0
    meta = result.meta
    if not args.no_calibrate:  # the same loaded reader and embedder: each model loads once
        out = Path(meta["config"]["output"])
        meta = calibrate_reader(Path(meta["config"]["train_file"]), out, embedder=result.embedder, reader=result.reader)
    print(json.dumps(meta.get("dev_gold_paragraph", {}), indent=2))
    return 0
