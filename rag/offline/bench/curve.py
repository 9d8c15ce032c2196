"""`rag bench curve`: the learning curve of reader folders on a SQuAD file, with a plot."""
from __future__ import annotations

from pathlib import Path

from rag.offline.bench.harness import NO_MATPLOTLIB, QUESTIONS_FILE, pyplot, shown


def run_learning_curve(squad_file: Path, readers: list[tuple[str, Path]], plot: Path,
                       questions_file: Path | None = None) -> str:
    """Cumulative training's learning curve: for each reader version, the training windows its lineage saw
    against its dev F1s (from its reader_meta.json), its hand-written seed-set F1 and its SQuAD test-article
    F1 (both evaluated here, open-domain, at its own threshold), with the wrong answers (answers given with
    F1 < 50) of each. Table and plot (to `plot`); the seed set is `questions_file` (default the repository's
    eval/qa.jsonl)."""
    from rag.config import Settings
    from rag.offline.evaluation import load_qa, run_items, squad_items
    from rag.offline.squad import is_right, squad_corpus
    from rag.offline.training import lineage_of, lineage_totals
    from rag.pipeline.qa import Pipeline
    from rag.reader.folder import load_reader_meta
    from rag.reader.model import Reader
    from rag.store.embedding import Embedder
    from rag.store.files.index import memory_index, open_index

    settings = Settings()
    embedder = Embedder.from_settings(settings)
    seed_index = open_index(settings, embedder)
    questions, pairs = squad_items(squad_file, None, "test")
    test_index = memory_index(squad_corpus(questions), embedder, settings)
    qa_file = questions_file or QUESTIONS_FILE
    items, test_items = load_qa(qa_file), [item for _, item in pairs]
    rows, previous = [], []
    for label, folder in readers:
        meta = load_reader_meta(folder)
        runs = lineage_of(folder)
        if "lineage" not in meta and previous:
            # a reader from before lineages were recorded names its base by a path that may hold a later
            # reader now (v3's "rag/models/reader"): its base is the version listed before it
            runs = previous + runs[-1:]
        previous = runs
        totals = lineage_totals(runs)
        settings_r = settings.with_overrides(reader_model=str(folder))
        reader = Reader.from_settings(settings_r)  # loaded once, read by both pipelines
        seeds = run_items(Pipeline.from_settings(settings_r, index=seed_index, embedder=embedder, reader=reader), items,
                          name=f"{label} seeds")
        test = run_items(Pipeline.from_settings(settings_r, index=test_index, embedder=embedder, reader=reader),
                         test_items, name=f"{label} test")
        wrong = lambda report: sum(r.prediction is not None and not is_right(r.f1) for r in report.rows)  # noqa: E731
        rows.append({"version": label, "folder": str(folder), "windows_seen": totals["windows_seen"], "steps": totals["steps"],
                     "dev_gold_forced_f1": meta.get("dev_gold_paragraph", {}).get("forced_answer", {}).get("f1"),
                     "dev_open_f1": meta.get("calibration_report", {}).get("open_domain", {}).get("at_threshold", {}).get("f1"),
                     "threshold": meta.get("calibration", {}).get("threshold"),
                     "seed_f1": seeds.metrics["f1"], "seed_wrong": wrong(seeds),
                     "test_f1": test.metrics["f1"], "test_wrong": wrong(test)})
    fmt = lambda x: "–" if x is None else f"{x:.1f}"  # noqa: E731
    lines = [
        f"seed set: {shown(qa_file)} ({len(items)} questions); test: the {len(test_items)} questions of the test articles of"
        f" {squad_file.name}, open-domain over their paragraphs; each reader at its own calibrated threshold",
        "| version | windows seen | steps | dev gold ¶ forced F1 | dev open-domain F1 (threshold) | seed F1 | seed wrong answers "
        "| test F1 | test wrong answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {r['version']} | {r['windows_seen']:,} | {r['steps']:,} | {fmt(r['dev_gold_forced_f1'])} | "
          f"{fmt(r['dev_open_f1'])} ({r['threshold']}) | {fmt(r['seed_f1'])} | {r['seed_wrong']} | {fmt(r['test_f1'])} | "
          f"{r['test_wrong']} |" for r in rows],
    ]
    plt = pyplot()
    if plt is None:
        return "\n".join([*lines, NO_MATPLOTLIB])
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    x = [r["windows_seen"] for r in rows]
    for key, name, style in (("dev_gold_forced_f1", "dev, gold paragraph, forced", "o-"),
                             ("dev_open_f1", "dev, open-domain, at threshold", "s-"),
                             ("seed_f1", "hand-written seed set", "^-"), ("test_f1", "SQuAD test articles", "d-")):
        ax.plot(x, [r[key] for r in rows], style, label=name)
    for r in rows:
        ax.annotate(r["version"], (r["windows_seen"], r["dev_gold_forced_f1"] or 0), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=8)
    ax.set(xlabel="training windows seen (cumulative, all runs of the lineage)", ylabel="F1",
           title="reader: cumulative CPU training")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=110)
    plt.close(fig)
    lines.append(f"plot: {plot}")
    return "\n".join(lines)
