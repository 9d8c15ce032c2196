"""The training data: window labels and the extra-source draw (training itself never runs in tests)."""
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rag.offline.squad import load_squad
from rag.offline.training import Example, extra_examples, windows
from rag.offline.training.data import examples_from
from rag.store.embedding import resolve_embedding_model

from helpers import REPO
from helpers.squad import squad_file


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_embedding_model("all-MiniLM-L6-v2"))


def decoded(tokenizer, window):
    return tokenizer.decode(window["input_ids"][window["start"] : window["end"] + 1])


def test_answer_labels_point_at_the_answer_tokens(tokenizer):
    context = "The Fastnet Rock lighthouse was designed by William Douglass and completed in 1904."
    start = context.index("William Douglass")
    [w] = windows(tokenizer, [Example("Who designed it?", context, start, "William Douglass")], 64, 16)
    assert decoded(tokenizer, w) == "william douglass"


def test_unanswerable_and_out_of_window_answers_point_at_cls(tokenizer):
    filler = "Nothing happened on that quiet day in the village. " * 12
    context = filler + "The bridge opened in 1932."
    start = context.index("1932")
    ws = windows(tokenizer, [Example("When did the bridge open?", context, start, "1932"),
                             Example("Who built it?", "A short text.", None)], 48, 16)
    answer_windows = [w for w in ws[:-1] if w["start"] > 0]
    assert answer_windows and all(decoded(tokenizer, w) == "1932" for w in answer_windows)
    assert any(w["start"] == w["end"] == 0 for w in ws[:-1]), "windows without the answer are labelled [CLS]"
    assert ws[-1]["start"] == ws[-1]["end"] == 0


def test_extra_questions_are_drawn_evenly_across_sources(tmp_path):
    """A small source is taken whole, the others fill the rest evenly, and unnamed sources are never drawn."""
    def article(source, n):
        return {"title": f"{source}:doc", "paragraphs": [{"context": "Alpha beta gamma.", "qas": [
            {"id": f"{source}{i}", "question": f"{source} question {i}?", "is_impossible": False,
             "answers": [{"text": "beta", "answer_start": 6}]} for i in range(n)]}]}

    path = tmp_path / "extra.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [article("big", 50), article("small", 3),
                                                               article("other", 50), article("unused", 50)]}))
    picked = extra_examples(path, ["big", "small", "other"], 21, random.Random(0))
    assert all(e.origin == "extra" and e.answer_start == 6 and e.answer_text == "beta" for e in picked)
    assert Counter(e.question.split()[0] for e in picked) == {"big": 9, "other": 9, "small": 3}
    assert len({e.question for e in picked}) == 21


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    ctx = "The Fastnet Rock lighthouse was designed by William Douglass and completed in 1904 off Ireland."
    train = squad_file(root / "train.json", {
        "Lighthouse": [(ctx, [("Who designed the lighthouse?", "William Douglass"),
                              ("When was it completed?", "1904"), ("Who painted it?", None)])] * 3,
        "Normans": [("The Normans gave their name to Normandy, a region in France.",
                     [("What region is named after the Normans?", "Normandy"), ("Who ate bread?", None)])],
    })
    extra = squad_file(root / "extra.json", {
        f"{source}:doc": [(f"{source} text says that the answer is blue and the rest is grey.",
                           [(f"{source} question {i}?", "blue") for i in range(6)])]
        for source in ("one", "two")})
    return train, extra


def _config(tiny_data, output, **changes):
    from rag.offline.training import TrainConfig

    train, extra = tiny_data
    settings = dict(train_file=str(train), output=str(output), extra_file=str(extra), extra_sources=["one", "two"],
                    extra_questions=4, negative_fraction=0.0, epochs=2, batch_size=2, max_length=48, stride=16,
                    learning_rate=1e-4, seed=3, threads=1, checkpoint_minutes=1000)
    return TrainConfig(**{**settings, **changes})


@pytest.mark.slow
def test_a_cut_off_run_resumes_to_the_same_weights(tiny_data, tmp_path):
    """Stopped after 3 steps and resumed from its checkpoint, a run ends with exactly the weights of a run
    that was never stopped; the checkpoint is removed once the run is complete."""
    from safetensors.torch import load_file

    from rag.offline.training import resume_training, train

    whole = train(_config(tiny_data, tmp_path / "whole")).meta
    assert train(_config(tiny_data, tmp_path / "cut"), stop_after=3) is None
    assert (tmp_path / "cut" / "checkpoint" / "state.json").is_file()
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    (tmp_path / "cut").rename(tmp_path / "moved")  # a checkpoint resumes from wherever it was moved to
    resumed = resume_training(tmp_path / "moved").meta
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "moved" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert whole["steps"] == resumed["steps"] > 3
    assert resumed["final_loss"] == whole["final_loss"]
    assert not (tmp_path / "moved" / "checkpoint").exists()


@pytest.mark.slow
def test_init_continues_a_reader_and_its_lineage_with_fresh_extra_questions(tiny_data, tmp_path):
    from safetensors.torch import load_file

    from rag.offline.training import lineage_table, replay_extra_draws, train

    first = train(_config(tiny_data, tmp_path / "v1")).meta
    second = train(_config(tiny_data, tmp_path / "v2", init=str(tmp_path / "v1"), seed=4, epochs=1)).meta
    assert [r["output"] for r in second["lineage"]] == [str(tmp_path / "v1"), str(tmp_path / "v2")]
    assert second["lineage"][0] == first["lineage"][0]
    totals = second["lineage_totals"]
    assert totals["runs"] == 2 and totals["steps"] == first["steps"] + second["steps"]
    assert totals["windows_seen"] == first["data"]["windows"] * 2 + second["data"]["windows"]
    # The second run drew only extra questions the first did not use, and the replay finds both draws.
    extra_qs = load_squad(tiny_data[1])
    used_by_first = replay_extra_draws(first["lineage"], extra_qs, 0)
    used_by_both = replay_extra_draws(second["lineage"], extra_qs, 0)
    assert len(used_by_first) == 4 and len(used_by_both) == 8
    assert second["lineage"][1]["extra_draw"]["excluded_as_used_before"] == 4
    table = lineage_table(tmp_path / "v2").splitlines()  # `rag lineage`: one row per run, windows seen cumulative
    assert len(table) == 4 and table[3].split(" | ")[3] == f"{first['data']['windows'] * 2 + second['data']['windows']:,}"
    # Initialised from v1, not from the bare encoder: its QA head starts where v1's ended.
    assert second["config"]["init"] == str(tmp_path / "v1")
    head = lambda d: load_file(d / "model.safetensors")["qa_outputs.weight"].float()  # noqa: E731
    assert (head(tmp_path / "v2") - head(tmp_path / "v1")).abs().max() < (head(tmp_path / "v1")).abs().max()


def test_long_contexts_become_passages_around_the_answer_with_a_negative():
    from rag.offline.training import passage_examples

    text = " ".join(f"word{i}" for i in range(2000))
    start = text.index("word1500 ")
    [e] = [Example("q?", text, start, "word1500", "extra", "id1")]
    out = passage_examples([e, Example("short?", "tiny text", 0, "tiny")], 3000, 600, random.Random(1))
    passage, negative, short = out
    assert passage.context[passage.answer_start:].startswith("word1500") and len(passage.context) < 700
    assert passage.context in text and negative.context in text
    assert negative.answer_start is None and negative.origin == "extra-negative" and "word1500 " not in negative.context
    assert short.context == "tiny text"


def _study_script():
    """scripts/calibration_study.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("calibration_study", REPO / "scripts" / "calibration_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_calibration_study_features_read_the_question_and_the_answer():
    study = _study_script()
    assert study.type_match("How many moons does Mars have?", "two") == 1.0
    assert study.type_match("Who wrote the novel?", "a novel") == 0.0
    assert study.type_match("What is the lamp made of?", "glass") == 0.5
    assert study.content_words("The Normans of France") == {"normans", "france"}


def test_calibrate_reader_study_without_the_script_says_how_to_run_it(monkeypatch, tmp_path, capsys):
    """`rag calibrate-reader --study` runs scripts/calibration_study.py; an installation without the
    repository's scripts/ folder is told so, not given a traceback."""
    import rag.config
    from rag.cli import main

    monkeypatch.setattr(rag.config, "REPO_DIR", tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["calibrate-reader", "--study", "--train", "x.json", "--model", "m"])
    assert exit_.value.code == 2 and "python scripts/calibration_study.py --train" in capsys.readouterr().err


@pytest.mark.slow
def test_a_cut_off_shared_norm_run_resumes_to_the_same_weights(tiny_data, tmp_path):
    """A shared-normalisation run of a few groups (and, with --alone-fraction 1, every question read against
    its own paragraph alone too), stopped and resumed, ends with the weights of one never stopped; its
    record counts groups by origin and the windows they hold."""
    from safetensors.torch import load_file

    from rag.offline.training import resume_training, train

    changes = dict(shared_norm=True, group_size=2, batch_size=2, epochs=1, bf16=False, alone_fraction=1.0)
    whole = train(_config(tiny_data, tmp_path / "whole", **changes)).meta
    assert train(_config(tiny_data, tmp_path / "cut", **changes), stop_after=2) is None
    resumed = resume_training(tmp_path / "cut").meta
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    mix = whole["data"]["mix"]
    # Normans is a dev article: 3 x 2 answerable and 3 x 1 unanswerable Lighthouse questions, 4 extra ones.
    assert mix["squad"] == 6 and mix["squad-unanswerable"] == 3 and mix["extra:one"] + mix["extra:two"] == 4
    assert mix["squad-alone"] == 6 and mix["squad-unanswerable-alone"] == 3
    assert mix["extra:one-alone"] + mix["extra:two-alone"] == 4
    assert whole["data"]["windows"] == mix["windows"] > 13 + 13  # the Lighthouse groups hold two passages
    assert whole["steps"] == resumed["steps"] == 13 and resumed["final_loss"] == whole["final_loss"]
    assert whole["config"]["shared_norm"] and whole["lineage"][-1]["windows"] == mix["windows"]


def test_answers_with_white_space_around_them_label_the_answer_tokens_only(tokenizer, tmp_path):
    """Some extra-file answers (393 of covidqa's) begin at a space; loading trims them and moves the
    start, so the labels do not take in the word before the answer."""
    context = "The Fastnet Rock lighthouse was completed in 1904 by the Irish Lights board."
    start = context.index(" 1904 ")
    path = tmp_path / "spaces.json"
    path.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "When was it completed?", "answers": [{"text": " 1904 ", "answer_start": start}]},
    ]}]}]}))
    [q] = load_squad(path)
    assert q.answers == ("1904",) and context[q.answer_starts[0]:].startswith("1904 by")
    [w] = windows(tokenizer, examples_from([q], "extra"), 64, 16)
    assert decoded(tokenizer, w) == "1904"


def test_a_long_paper_s_negative_holds_no_answer_in_any_case():
    """The whole-paper recipe's answer-less passage uses the one holds_answer rule: a passage that says
    "paris" is not a negative for the answer "Paris"."""
    from rag.offline.training import passage_examples

    words = [f"word{i}" if i % 40 else "paris" for i in range(2000)]
    words[1500] = "Paris"
    text = " ".join(words)
    e = Example("q?", text, text.index(" Paris ") + 1, "Paris", "extra", "id1")
    out = passage_examples([e], 3000, 600, random.Random(1))
    assert [x.origin for x in out] == ["extra"], "every passage of this paper says the answer"
    text = text.replace("paris", "lyon")
    out = passage_examples([Example("q?", text, text.index(" Paris ") + 1, "Paris", "extra", "id1")], 3000, 600,
                           random.Random(1))
    assert [x.origin for x in out] == ["extra", "extra-negative"] and "paris" not in out[1].context.lower()


@pytest.mark.slow
def test_a_lora_run_resumes_exactly_and_saves_the_merged_model_and_its_adapter(tiny_data, tmp_path):
    """With --lora-rank the base stays frozen: the saved model is the base plus the merged adapters (its
    embeddings unchanged), the adapter is written alone, and a cut-off run resumes to the same weights."""
    from safetensors.torch import load_file

    from rag.offline.training import resume_training, train
    from rag.store.embedding import resolve_embedding_model

    whole = train(_config(tiny_data, tmp_path / "whole", lora_rank=4, lora_alpha=8, learning_rate=1e-3)).meta
    assert whole["config"]["lora_rank"] == 4
    assert train(_config(tiny_data, tmp_path / "cut", lora_rank=4, lora_alpha=8, learning_rate=1e-3), stop_after=2) is None
    resume_training(tmp_path / "cut")
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    adapter = load_file(tmp_path / "whole" / "adapter.safetensors")
    assert any(k.endswith(".lora_a") for k in adapter) and "qa_outputs.weight" in adapter
    base = load_file(str(Path(resolve_embedding_model("all-MiniLM-L6-v2")) / "model.safetensors"))
    emb, query = "embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight"
    assert a["bert." + emb].equal(base[emb].half())  # frozen: only rounded to fp16
    assert not a["bert." + query].equal(base[query].half())  # adapted


def test_lora_cannot_continue_a_reader(tiny_data, tmp_path):
    from rag.offline.training.lineage import TrainingError

    with pytest.raises(TrainingError, match="--lora-rank"):
        _config(tiny_data, tmp_path / "x", lora_rank=4, init="rag/models/reader")
