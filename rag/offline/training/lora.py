"""Low-rank adapters (LoRA) for training a large base, and the int8 copy of a base that travels to an
accelerator host.

A reader trained as base + adapter ships as the adapter alone (a few MB): the base comes from its own
packages (rag.offline.base_models) and the adapter is merged into it on load. The base it was trained on may be
the int8 round trip of the published weights (`int8_round_trip`), which is deterministic (IEEE division
and round-half-even), so the same weights are rebuilt on any machine."""
from __future__ import annotations

import math

import numpy as np

#: The adapter's tensors are named "<linear>.lora_a" / "<linear>.lora_b"; every other tensor in an adapter
#: file (the QA head, biases, LayerNorms) replaces the base's tensor of that name.
LORA_A, LORA_B = ".lora_a", ".lora_b"
INT8_MIN_SIZE = 65536  # smaller tensors (biases, LayerNorms) stay fp32 in the int8 copy


def int8_quantize(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-row absmax int8 of every 2-D float tensor of at least INT8_MIN_SIZE values ("name::q" int8 and
    "name::s" fp32 scales); the rest kept as they are."""
    out: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        w = np.asarray(w)
        if w.ndim == 2 and w.size >= INT8_MIN_SIZE and w.dtype.kind == "f":
            w = w.astype(np.float32)
            scale = (np.abs(w).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
            scale[scale == 0] = np.float32(1)
            out[name + "::q"] = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            out[name + "::s"] = scale
        else:
            out[name] = w
    return out


def int8_dequantize(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fp32 weights of an int8 copy (int8_quantize)."""
    out: dict[str, np.ndarray] = {}
    for name, value in packed.items():
        if name.endswith("::q"):
            base = name[:-3]
            out[base] = value.astype(np.float32) * packed[base + "::s"]
        elif not name.endswith("::s"):
            out[name] = value
    return out


def int8_round_trip(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return int8_dequantize(int8_quantize(weights))


def add_lora(model, rank: int, alpha: float, skip: tuple[str, ...] = ("qa_outputs",)) -> list[str]:
    """Freeze the model and wrap each of its linear layers (except those under `skip`) with a trainable
    low-rank update; 1-D tensors (biases, LayerNorms) and the skipped layers stay trainable in full.
    The names of the wrapped layers."""
    import torch
    from torch import nn

    class LoRALinear(nn.Module):
        def __init__(self, base: nn.Linear):
            super().__init__()
            self.base = base
            self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
            self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
            nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
            self.scale = alpha / rank

        def forward(self, x):
            return self.base(x) + (x @ self.lora_a.t().to(x.dtype)) @ self.lora_b.t().to(x.dtype) * self.scale

    for p in model.parameters():
        p.requires_grad = False
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and not any(full.startswith(s) for s in skip):
                setattr(module, child_name, LoRALinear(child))
                wrapped.append(full)
    for name, p in model.named_parameters():
        if p.ndim == 1 or any(name.startswith(s) for s in skip) or name.endswith((LORA_A, LORA_B)):
            p.requires_grad = True
    return wrapped


def adapter_state(model) -> dict:
    """The trainable tensors of a model made by add_lora, named as in the plain model ("x.base.weight" is
    "x.weight"): what an adapter file holds."""
    return {name.replace(".base.", "."): p.detach().float().cpu().contiguous()
            for name, p in model.named_parameters() if p.requires_grad}


def merge_adapter(weights: dict[str, np.ndarray], adapter: dict[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    """The base's weights with the adapter merged in: W + B·A·alpha/rank for each adapted layer, and every
    other adapter tensor in place of the base's."""
    out = dict(weights)
    for name, value in adapter.items():
        value = np.asarray(value, dtype=np.float32)
        if name.endswith(LORA_A):
            layer = name[: -len(LORA_A)]
            b = np.asarray(adapter[layer + LORA_B], dtype=np.float32)
            out[layer + ".weight"] = (np.asarray(weights[layer + ".weight"], dtype=np.float32)
                                      + (b @ value) * np.float32(alpha / value.shape[0]))
        elif not name.endswith(LORA_B):
            out[name] = value
    return out


def merged_model(base: str, adapter: dict, alpha: float):
    """The plain QA model of `base` with `adapter` (adapter_state's tensors) merged in, fp32."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    plain = AutoModelForQuestionAnswering.from_pretrained(base, dtype=torch.float32)
    merged = merge_adapter({k: v.numpy() for k, v in plain.state_dict().items()},
                           {k: v.numpy() for k, v in adapter.items()}, alpha)
    plain.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in merged.items()})
    return plain
