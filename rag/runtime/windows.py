"""The tokenizers-only windowing the reader reads: question/context pairs cut into overlapping windows,
padded into batches (no transformers import)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rag.runtime.onnx import ModelRuntimeError


def load_tokenizer(folder: str | Path):
    """The fast tokenizer of a model folder (`tokenizer.json`) through the `tokenizers` library, with
    no truncation or padding of its own."""
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception
        raise ModelRuntimeError(f"cannot load the tokenizer {path}: {err}") from None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def pad_id(folder: str | Path, tokenizer) -> int:
    """The padding token's id, as the model's tokenizer_config.json names it ([PAD] by default)."""
    name = "[PAD]"
    config = Path(folder) / "tokenizer_config.json"
    if config.is_file():
        pad = json.loads(config.read_text(encoding="utf-8")).get("pad_token")
        name = pad.get("content", name) if isinstance(pad, dict) else (pad or name)
    token = tokenizer.token_to_id(name)
    return 0 if token is None else int(token)


def pad_batch(encodings: list, pad: int) -> dict[str, np.ndarray]:
    """`tokenizers` encodings as int64 arrays padded to the longest: input_ids (padded with `pad`),
    token_type_ids and attention_mask (padded with 0)."""
    width = max(len(e.ids) for e in encodings)
    batch = {"input_ids": np.full((len(encodings), width), pad, dtype=np.int64),
             "token_type_ids": np.zeros((len(encodings), width), dtype=np.int64),
             "attention_mask": np.zeros((len(encodings), width), dtype=np.int64)}
    for i, e in enumerate(encodings):
        k = len(e.ids)
        batch["input_ids"][i, :k], batch["token_type_ids"][i, :k], batch["attention_mask"][i, :k] = \
            e.ids, e.type_ids, e.attention_mask
    return batch


class Windows:
    """(question, context) pairs cut into overlapping windows, padded to the longest: the arrays a
    transformers fast tokenizer returns for `return_overflowing_tokens=True, return_offsets_mapping=True,
    padding="longest"`, with the same order (each pair's windows in turn) and the same values."""

    def __init__(self, encodings: list, pairs: list[int], pad: int) -> None:
        self.data = pad_batch(encodings, pad)
        n, width = self.data["input_ids"].shape
        self._sequence_ids = [e.sequence_ids + [None] * (width - len(e.ids)) for e in encodings]
        self.data["offset_mapping"] = np.zeros((n, width, 2), dtype=np.int64)
        for i, e in enumerate(encodings):
            self.data["offset_mapping"][i, : len(e.ids)] = e.offsets
        self.data["overflow_to_sample_mapping"] = np.asarray(pairs, dtype=np.int64)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def sequence_ids(self, window: int) -> list[int | None]:
        """0 for question tokens, 1 for context tokens, None for special and padding tokens."""
        return self._sequence_ids[window]


class PairTokenizer:
    """Question/context windowing with `tokenizers` alone (no transformers import): truncation of the
    context only, `stride` tokens of overlap, offsets into the context."""

    def __init__(self, tokenizer, pad: int, max_length: int, stride: int) -> None:
        from tokenizers import Tokenizer

        self._plain = tokenizer
        self._windows = Tokenizer.from_str(tokenizer.to_str())
        self._windows.enable_truncation(max_length, stride=stride, strategy="only_second")
        self.pad = pad

    @classmethod
    def from_folder(cls, folder: str | Path, max_length: int, stride: int) -> PairTokenizer:
        tokenizer = load_tokenizer(folder)
        return cls(tokenizer, pad_id(folder, tokenizer), max_length, stride)

    def count(self, text: str) -> int:
        """Tokens of `text` alone, no special tokens."""
        return len(self._plain.encode(text.strip(), add_special_tokens=False).ids)

    def windows(self, questions: list[str], contexts: list[str]) -> Windows:
        encodings, pairs = [], []
        for i, e in enumerate(self._windows.encode_batch([(q.strip(), c) for q, c in zip(questions, contexts)])):
            for w in (e, *e.overflowing):
                encodings.append(w)
                pairs.append(i)
        return Windows(encodings, pairs, self.pad)
