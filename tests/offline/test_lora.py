"""LoRA adapters and the int8 copy of a base: merging an adapter gives the adapted model's outputs, and the
int8 round trip is deterministic and within half a step of every weight."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rag.offline.training.lora import adapter_state, add_lora, int8_quantize, int8_round_trip, merge_adapter  # noqa: E402


def _tiny_bert():
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32)
    return BertForQuestionAnswering(config).eval()


def test_a_merged_adapter_answers_like_the_adapted_model():
    model = _tiny_bert()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = add_lora(model, rank=4, alpha=8)
    assert wrapped and all("qa_outputs" not in name for name in wrapped)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.endswith("lora_a") for n in trainable) and "qa_outputs.weight" in trainable
    assert not any(n.endswith("base.weight") for n in trainable)  # the base's matrices stay frozen
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    ids = torch.randint(1, 50, (3, 12))
    for _ in range(3):
        out = model(input_ids=ids, start_positions=torch.tensor([1, 2, 3]), end_positions=torch.tensor([2, 3, 4]))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        adapted = model(input_ids=ids).start_logits
    merged = merge_adapter({k: v.numpy() for k, v in base.items()},
                           {k: v.numpy() for k, v in adapter_state(model).items()}, alpha=8)
    plain = _tiny_bert()
    plain.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in merged.items()})
    with torch.no_grad():
        again = plain(input_ids=ids).start_logits
    assert torch.allclose(adapted, again, atol=1e-4)
    assert not torch.allclose(again, _tiny_bert()(input_ids=ids).start_logits, atol=1e-3)  # training changed it


def test_the_int8_round_trip_is_deterministic_and_close():
    rng = np.random.default_rng(0)
    weights = {"big": rng.normal(size=(300, 256)).astype(np.float32), "bias": rng.normal(size=300).astype(np.float32)}
    packed = int8_quantize(weights)
    assert packed["big::q"].dtype == np.int8 and "bias" in packed
    once, twice = int8_round_trip(weights), int8_round_trip(weights)
    assert np.array_equal(once["big"], twice["big"]) and np.array_equal(once["bias"], weights["bias"])
    step = np.abs(weights["big"]).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(once["big"] - weights["big"]) <= step / 2 + 1e-6)
