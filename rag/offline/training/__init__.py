"""Fine-tune the extractive reader on SQuAD 2.0-format data (`rag train-reader`).

Recipe: sliding windows with offset mapping, unanswerable windows labelled at [CLS], answerable questions
also paired with passages the project's own retriever returns for them that do not hold the answer
(labelled unanswerable, since that is what open-domain answering feeds the reader), an article-disjoint
development split, and the no-answer margin chosen on that split. Writes a normal Hugging Face folder
(fp16 safetensors) plus reader_meta.json with the settings, the data hashes and the dev metrics.

data: the settings, examples and windows; loop: the run; checkpoints: resuming it; lineage: the runs that
made a reader. Calibration is rag.offline.calibrate.
"""
from rag.offline.training.checkpoints import CHECKPOINT_DIR
from rag.offline.training.data import Example, TrainConfig, extra_examples, passage_examples, replay_extra_draws, windows
from rag.offline.training.lineage import CPU_NOTE, TrainingError, lineage_of, lineage_table, lineage_totals
from rag.offline.training.loop import TrainResult, evaluate_gold, resume_training, train

__all__ = [
    "CHECKPOINT_DIR", "CPU_NOTE", "Example", "TrainConfig", "TrainResult", "TrainingError", "evaluate_gold",
    "extra_examples", "lineage_of", "lineage_table", "lineage_totals", "passage_examples", "replay_extra_draws",
    "resume_training", "train", "windows",
]
