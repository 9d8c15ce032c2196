"""Extractive reader: scores answer spans in (question, context) pairs with a QA head on a BERT-style encoder.

The transformers `question-answering` pipeline is gone in transformers 5, so this module does the standard
SQuAD 2.0 recipe itself: sliding windows with offset mapping in, n-best span search with a maximum answer
length and the [CLS] "no answer" score out. Scores are raw start+end logits, comparable across windows
and contexts of one batch (no per-passage softmax).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from rag.config import READER_BACKENDS, Settings
from rag.errors import QuestionError
from rag.reader.decode import ContextReading, decode_readings
from rag.reader.folder import (
    ONNX_FILE,
    ReaderError,
    check_export_is_current,
    load_qa_model,
    load_reader_meta,
    resolve_reader_model,
)
from rag.runtime.cpu import has_int8_dot_product, length_bucket_for
from rag.runtime.onnx import ModelRuntimeError, cached_export, model_inputs, onnx_session
from rag.runtime.windows import PairTokenizer

log = logging.getLogger(__name__)

BACKENDS = READER_BACKENDS


def _cached_session(path: Path, threads: int):
    """A session on a cached export, or None (with a warning) when it does not load: the cache only
    speeds things up, so a damaged export falls back to torch instead of failing the question."""
    try:
        return onnx_session(path, threads)
    except ModelRuntimeError as err:
        log.warning("%s; running the reader through torch (delete the file to re-export it)", err)
        return None


def tokenize_pairs(tokenizer, questions: list[str], contexts: list[str], max_length: int, stride: int, **options):
    """(question, context) pairs as overlapping windows of at most `max_length` tokens with character
    offsets, through transformers: how training labels its windows. The reader makes the same windows with
    `tokenizers` alone (rag.runtime.windows.PairTokenizer; a test holds the two equal)."""
    return tokenizer(
        [q.strip() for q in questions],
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        **options,
    )


#: Settings field -> Reader argument: the one mapping from the settings to a reader (Reader.from_settings,
#: and the key under which a process shares one reader between pipelines: reader_key).
SETTINGS_TO_READER = {
    "reader_model": "model", "max_seq_length": "max_seq_length", "doc_stride": "doc_stride",
    "max_answer_tokens": "max_answer_tokens", "n_best": "n_best", "reader_batch_size": "batch_size",
    "max_question_tokens": "max_question_tokens", "max_windows_per_passage": "max_windows_per_context",
    "max_windows_per_question": "max_windows", "reader_backend": "backend", "torch_threads": "threads",
    "widen_to_words": "widen_to_words", "reader_length_bucket": "length_bucket", "measure_runtime": "measure_runtime",
}


def reader_key(settings: Settings) -> tuple:
    """What makes two settings' readers the same reader (every setting a Reader is made from)."""
    return tuple(getattr(settings, field) for field in SETTINGS_TO_READER)


class Reader:
    """Finds the best answer spans of a question in a batch of contexts."""

    def __init__(
        self,
        model: str = Settings.reader_model,
        max_seq_length: int = Settings.max_seq_length,
        doc_stride: int = Settings.doc_stride,
        max_answer_tokens: int = Settings.max_answer_tokens,
        n_best: int = Settings.n_best,
        batch_size: int = Settings.reader_batch_size,
        max_question_tokens: int = Settings.max_question_tokens,
        max_windows_per_context: int = Settings.max_windows_per_passage,
        max_windows: int = Settings.max_windows_per_question,
        backend: str = Settings.reader_backend,
        threads: int = Settings.torch_threads,
        widen_to_words: bool = Settings.widen_to_words,
        length_bucket: int = Settings.reader_length_bucket,
        measure_runtime: bool = Settings.measure_runtime,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if not 32 <= max_seq_length <= 512:
            raise ValueError("max_seq_length must be between 32 and 512")
        if not 0 < doc_stride < max_seq_length:
            raise ValueError("doc_stride must be positive and below max_seq_length")
        # Every window must keep more than doc_stride tokens for context whatever the question (else the
        # tokenizer fails): questions longer than that are refused, so the limit is capped to fit the window.
        max_question_tokens = min(max_question_tokens, max_seq_length - doc_stride - 4)
        if max_question_tokens < 1:
            raise ValueError("max_seq_length - doc_stride leaves no room for a question")
        if max_windows_per_context < 1 or max_windows < 1:
            raise ValueError("max_windows_per_context and max_windows must be at least 1")
        if max_answer_tokens < 1 or n_best < 1 or batch_size < 1:
            raise ValueError("max_answer_tokens, n_best and batch_size must be at least 1")
        if length_bucket < 0:
            raise ValueError("length_bucket must be 0 (the runtime's own) or more")
        self.arguments = {"model": model, "max_seq_length": max_seq_length, "doc_stride": doc_stride,
                          "max_answer_tokens": max_answer_tokens, "n_best": n_best, "batch_size": batch_size,
                          "max_question_tokens": max_question_tokens, "max_windows_per_context": max_windows_per_context,
                          "max_windows": max_windows, "backend": backend, "threads": threads,
                          "widen_to_words": widen_to_words, "length_bucket": length_bucket,
                          "measure_runtime": measure_runtime}  # what with_backend makes another reader from
        self.model_name = model
        self.max_seq_length = max_seq_length
        self.doc_stride = doc_stride
        self.max_answer_tokens = max_answer_tokens
        self.n_best = n_best
        self.batch_size = batch_size
        self.max_question_tokens = max_question_tokens
        self.max_windows_per_context = max_windows_per_context
        self.max_windows = max_windows
        self.backend = backend
        self.threads = threads
        self.widen_to_words = widen_to_words
        self.length_bucket = length_bucket
        self.measure_runtime = measure_runtime
        self.runtime_choice = None  # with measure_runtime: the RuntimeChoice behind "auto" (rag.runtime.choice)
        self.meta: dict = {}
        self.runtime = ""  # what runs the forward pass, once loaded (for /health and the benchmarks)
        self._model = None  # a torch module, or an onnxruntime session
        self._inputs: frozenset[str] = frozenset()  # the input names _model takes
        self._tokenizer: PairTokenizer | None = None
        self._checked: str | None = None  # the last question check_question passed
        self.last_forward_seconds = 0.0  # the forward passes of the last logits() call (the /metrics histogram)

    @classmethod
    def from_settings(cls, settings: Settings) -> Reader:
        """The reader the settings describe (SETTINGS_TO_READER, every value passed by name)."""
        return cls(**{argument: getattr(settings, field) for field, argument in SETTINGS_TO_READER.items()})

    def with_backend(self, backend: str) -> Reader:
        """The same reader on another runtime, not loaded yet (runtime choice times each candidate with one)."""
        return Reader(**{**self.arguments, "backend": backend, "measure_runtime": False})

    def attach(self, model) -> None:
        """Use a torch model already in memory (training's, just saved to this reader's folder) instead of
        loading it again."""
        path = resolve_reader_model(self.model_name)
        self._tokenizer = self._load_tokenizer(path)
        self._use(model.float().eval(), "torch fp32")
        self.meta = load_reader_meta(path)

    def _use(self, model, runtime: str) -> None:
        """Run the forward pass through `model` (a torch module or an onnxruntime session)."""
        self._model, self.runtime, self._inputs = model, runtime, model_inputs(model)

    @property
    def bucket(self) -> int:
        """Windows of a batch are padded to a multiple of this: the setting, or (0) the runtime's own."""
        return self.length_bucket or length_bucket_for(self.runtime)

    def padded_width(self, longest: int) -> int:
        """The width a batch whose longest window has `longest` tokens is padded to: a multiple of the bucket
        (at most max_seq_length), so a few shapes recur and a runtime that builds kernels per shape reuses
        them; masked padding is never attended to."""
        return min(max(longest, self.max_seq_length), -(-longest // self.bucket) * self.bucket)

    def _load_tokenizer(self, path: str) -> PairTokenizer:
        try:
            return PairTokenizer.from_folder(path, self.max_seq_length, self.doc_stride)
        except ModelRuntimeError as err:
            raise ReaderError(f"cannot load the reader model {self.model_name!r}: {err}") from None

    def resolved_path(self) -> str:
        """The reader's folder: the packaged one, a folder given, or a hub name's snapshot (fetched into the
        hub cache; offline, a one-line error)."""
        path = resolve_reader_model(self.model_name)
        if not Path(path).is_dir():
            try:
                from huggingface_hub import snapshot_download

                path = snapshot_download(path)
            except Exception as err:  # noqa: BLE001 - the hub client raises many unrelated types
                raise ReaderError(f"cannot load the reader model {self.model_name!r}: it is not a folder and "
                                  f"cannot be downloaded ({type(err).__name__})") from None
        return path

    def _measured_backend(self, path: str, fp32_export) -> str:
        """With measure_runtime, the runtime measured fastest on this CPU for "auto" (cached per machine)."""
        from rag.runtime.choice import cached_choice, measure

        choice = cached_choice(path, self)
        if choice is None or (choice.backend == "onnx-fp32" and fp32_export is None):
            choice = measure(self, has_export=fp32_export is not None)
        self.runtime_choice = choice
        return choice.backend

    def warm_up(self) -> None:
        """Load tokenizer and model once. "auto": the fp32 weights through their cached ONNX export (made
        by `rag index`) when there is one, else through torch, or with measure_runtime the runtime measured
        fastest on this CPU (rag.runtime.choice); "torch": always torch fp32; "torch-bf16": torch with bf16
        autocast; "onnx-fp32": the fp32 export; "onnx": the int8 export beside the weights. Torch is
        imported only when it runs the model."""
        if self._model is not None:
            return
        path = self.resolved_path()
        self._tokenizer = self._load_tokenizer(path)
        fp32_export = cached_export("reader", path) if self.backend in ("auto", "onnx-fp32") else None
        backend = self.backend
        if backend == "auto" and self.measure_runtime:
            backend = self._measured_backend(path, fp32_export)
        elif backend == "auto":
            backend = "onnx-fp32" if fp32_export is not None else "torch"
        if backend == "onnx-fp32" and fp32_export is None:
            raise ReaderError("the reader has no fp32 ONNX export yet: run `rag index` once (it makes it), or use "
                              "--reader-backend torch")
        try:
            if backend == "onnx":
                int8 = Path(path) / ONNX_FILE
                if not int8.is_file():
                    raise ReaderError(f"the reader has no ONNX export ({int8} is missing): run `rag export-reader`, "
                                      "or use --reader-backend torch")
                check_export_is_current(Path(path))
                self._use(onnx_session(int8, self.threads), "onnxruntime int8")
            elif backend == "onnx-fp32" and (session := _cached_session(fp32_export, self.threads)) is not None:
                self._use(session, "onnxruntime fp32")
            else:
                import torch

                if self.threads:
                    torch.set_num_threads(self.threads)
                self._use(load_qa_model(path, self.model_name), "torch bf16" if backend == "torch-bf16" else "torch fp32")
        except (OSError, ModelRuntimeError) as err:
            raise ReaderError(f"cannot load the reader model {self.model_name!r}: {err}") from None
        self.meta = load_reader_meta(path)
        if (self.runtime == "onnxruntime int8" and self.meta.get("onnx", {}).get("reduce_range") is False
                and not has_int8_dot_product()):
            log.warning("the int8 reader was exported for a CPU with VNNI/AMX (full int8 range); this CPU "
                        "has neither, so its products may overflow: run `rag export-reader` here")

    def question_tokens(self, question: str) -> int:
        """How many tokens the question takes in a window (it must fit in max_question_tokens)."""
        self.warm_up()
        return self._tokenizer.count(question)

    def check_question(self, question: str) -> None:
        """Refuse a question too long to leave the reader room for context (a QuestionError, not a crash).
        The last question that passed is remembered, so the pipeline's check before retrieval and the
        reading that follows tokenize it once."""
        if question == self._checked:
            return
        n = self.question_tokens(question)
        if n > self.max_question_tokens:
            raise QuestionError(f"the question is {n} tokens long; the limit is {self.max_question_tokens} tokens")
        self._checked = question

    def encode(self, questions: list[str], contexts: list[str]):
        """Tokenise (question, context) pairs into overlapping windows with character offsets. Contexts are
        cut to what max_windows_per_context windows can hold, so a huge passage costs no more than that."""
        self.warm_up()
        for q in dict.fromkeys(questions):  # each distinct question once (one question is read against many contexts)
            self.check_question(q)
        limit = self.max_windows_per_context * self.max_seq_length * 24  # characters: far more than any window holds
        return self._tokenizer.windows(questions, [c[:limit] for c in contexts])

    def kept_windows(self, encoding, max_total: int | None = None) -> list[int]:
        """The windows read: at most max_windows_per_context of each context (its first ones) and, with
        `max_total`, at most that many in all, taking each context's windows in turn, so one long passage
        cannot take them all."""
        per_context: dict[int, list[int]] = {}
        for w, pair in enumerate(encoding["overflow_to_sample_mapping"]):
            ws = per_context.setdefault(int(pair), [])
            if len(ws) < self.max_windows_per_context:
                ws.append(w)
        limit = max_total if max_total is not None else len(encoding["input_ids"])
        kept: list[int] = []
        for depth in range(self.max_windows_per_context):
            for ws in per_context.values():
                if depth < len(ws) and len(kept) < limit:
                    kept.append(ws[depth])
        if len(kept) < len(encoding["input_ids"]):
            log.debug("reading %d of %d windows", len(kept), len(encoding["input_ids"]))
        return sorted(kept)

    def logits(self, encoding, windows: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Start and end logits of the given windows (default: all), in batches, each batch cut to its
        longest window; the forward pass is the only thing the backends do differently."""
        starts, ends = [], []
        started = time.perf_counter()
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in encoding]
        rows = np.arange(len(encoding["input_ids"])) if windows is None else np.asarray(windows)
        width = np.asarray(encoding["input_ids"]).shape[1]
        for i in range(0, len(rows), self.batch_size):
            part = rows[i : i + self.batch_size]
            longest = int(np.asarray(encoding["attention_mask"])[part].sum(axis=1).max())
            batch = {n: np.asarray(encoding[n])[part][:, :longest] for n in names}
            bucket = self.padded_width(longest)
            if bucket > longest:
                fill = {"input_ids": self._tokenizer.pad}
                batch = {n: np.pad(v, ((0, 0), (0, bucket - longest)), constant_values=fill.get(n, 0))
                         for n, v in batch.items()}
            start, end = self._forward(batch)
            start, end = start[:, :longest], end[:, :longest]
            pad = ((0, 0), (0, width - longest))  # back to the encoding's width: positions past a window are never picked
            starts.append(np.pad(start, pad, constant_values=-1e4))
            ends.append(np.pad(end, pad, constant_values=-1e4))
        self.last_forward_seconds = time.perf_counter() - started  # read by callers holding the pipeline's lock
        return np.concatenate(starts), np.concatenate(ends)

    def _forward(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self.runtime.startswith("onnxruntime"):
            start, end = self._model.run(["start_logits", "end_logits"],
                                         {n: v.astype(np.int64) for n, v in batch.items() if n in self._inputs})
            return start, end
        import torch

        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.runtime == "torch bf16"):
            out = self._model(**{n: torch.from_numpy(v) for n, v in batch.items() if n in self._inputs})
        return out.start_logits.float().numpy(), out.end_logits.float().numpy()

    def run(self, question: str, contexts: list[str]) -> list[ContextReading]:
        """Read every context for one question in one batch, within the question's window budget
        (max_windows); one ContextReading per context."""
        return self.read_pairs([question] * len(contexts), contexts, max_windows=self.max_windows)

    def read_pairs(self, questions: list[str], contexts: list[str], max_windows: int | None = None) -> list[ContextReading]:
        """Read (question, context) pairs in one batch; one ContextReading per pair. Each context is read
        in at most max_windows_per_context windows; `max_windows` caps the whole call (one question's budget)."""
        if not contexts:
            return []
        encoding = self.encode(questions, contexts)
        windows = self.kept_windows(encoding, max_windows)
        start_logits, end_logits = self.logits(encoding, windows)
        return self.readings(encoding, windows, start_logits, end_logits, contexts)

    def readings(self, encoding, windows: list[int], start_logits: np.ndarray, end_logits: np.ndarray,
                 contexts: list[str]) -> list[ContextReading]:
        """The n-best spans and the no-answer score of each context, from its windows' logits."""
        return decode_readings(encoding, windows, start_logits, end_logits, contexts, n_best=self.n_best,
                               max_answer_tokens=self.max_answer_tokens, widen_to_words=self.widen_to_words)
