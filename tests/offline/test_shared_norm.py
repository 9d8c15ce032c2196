"""Shared-normalisation training: the loss on hand-made logits, the groups the retriever makes, and a short
run that resumes bit-identically (training itself never runs at full size in tests)."""
import math

import pytest
import torch

from rag.offline.squad import Question
from rag.offline.training.groups import alone_groups, collate_groups, group_items, retrieved_groups, shared_norm_loss


def _lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


# Two windows of one group, 4 positions each: [CLS], two context tokens, [SEP] (whose high logits must not count).
START = torch.tensor([[0.0, 1.0, 2.0, 5.0], [1.0, 3.0, 0.0, 7.0]])
END = torch.tensor([[0.0, 2.0, 1.0, 9.0], [0.0, 0.0, 1.0, 9.0]])
CONTEXT = torch.tensor([[False, True, True, False]] * 2)


def test_the_loss_is_one_softmax_over_every_window_of_the_group():
    group = torch.tensor([0, 0])
    # The answer is token 1..2 of window 0 and token 1..2 of window 1 too (the windows overlap).
    start, end = torch.tensor([1, 1]), torch.tensor([2, 2])
    loss = shared_norm_loss(START, END, CONTEXT, group, start, end, torch.tensor([True]), null="lse")
    z_start = _lse([1, 2, 3, 0] + [0, 1])  # every context token of both windows, and both [CLS]
    z_end = _lse([2, 1, 0, 1] + [0, 0])
    expected = ((z_start - _lse([1, 3])) + (z_end - _lse([1, 1]))) / 2  # summed over the windows holding it
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_an_unanswerable_group_targets_its_no_answer_option():
    group = torch.tensor([0, 0])
    zero = torch.tensor([0, 0])
    lse = shared_norm_loss(START, END, CONTEXT, group, zero, zero, torch.tensor([False]), null="lse")
    expected = ((_lse([1, 2, 3, 0, 0, 1]) - _lse([0, 1])) + (_lse([2, 1, 0, 1, 0, 0]) - _lse([0, 0]))) / 2
    assert lse.item() == pytest.approx(expected, abs=1e-5)
    # "max": only the highest [CLS] is the no-answer option, in the softmax and as the target.
    top = shared_norm_loss(START, END, CONTEXT, group, zero, zero, torch.tensor([False]), null="max")
    expected_max = ((_lse([1, 2, 3, 0, 1]) - 1) + (_lse([2, 1, 0, 1, 0]) - 0)) / 2
    assert top.item() == pytest.approx(expected_max, abs=1e-5)


def test_groups_of_a_batch_are_normalised_apart_and_averaged():
    one = shared_norm_loss(START[:1], END[:1], CONTEXT[:1], torch.tensor([0]), torch.tensor([1]), torch.tensor([2]),
                           torch.tensor([True]))
    two = shared_norm_loss(START[1:], END[1:], CONTEXT[1:], torch.tensor([0]), torch.tensor([0]), torch.tensor([0]),
                           torch.tensor([False]))
    both = shared_norm_loss(START, END, CONTEXT, torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 0]),
                            torch.tensor([True, False]))
    assert both.item() == pytest.approx((one.item() + two.item()) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="null must be one of"):
        shared_norm_loss(START, END, CONTEXT, torch.tensor([0, 0]), START[:, 0].long(), END[:, 0].long(),
                         torch.tensor([True]), null="mean")


ARTICLES = {
    "Lighthouses": ["The Fastnet Rock lighthouse was designed by William Douglass and finished in 1904.",
                    "Lighthouses were once lit by whale oil, later by paraffin and then by electricity.",
                    "The keepers of the Fastnet Rock lighthouse left in 1989 when it became automatic."],
    "Bridges": ["The Forth Bridge in Scotland opened in 1890 and carries a railway over the Firth of Forth.",
                "Suspension bridges hang their deck from cables slung between towers."],
    "Rivers": ["The Shannon is the longest river in Ireland and flows past the lighthouse town of Limerick."],
}


def _questions():
    out = []
    for title, paragraphs in ARTICLES.items():
        for p, text in enumerate(paragraphs):
            out.append(Question(f"{title}{p}", title, p, text, "What is this?", (), ()))
    gold = ARTICLES["Lighthouses"][0]
    out.append(Question("q1", "Lighthouses", 0, gold, "Who designed the Fastnet Rock lighthouse?",
                        ("William Douglass",), (gold.index("William Douglass"),)))
    out.append(Question("q2", "Lighthouses", 2, ARTICLES["Lighthouses"][2], "Who painted the lighthouse?", (), ()))
    return out


def test_a_group_is_the_gold_passage_and_retrieved_passages_without_the_answer(embedder):
    from rag.config import Settings

    corpus = _questions()
    asked = [q for q in corpus if q.id in ("q1", "q2")]
    groups, skipped = retrieved_groups(asked, corpus, "squad", embedder, Settings(), size=3)
    assert skipped == 0 and [g.origin for g in groups] == ["squad", "squad-unanswerable"]
    answerable, unanswerable = groups
    assert len(answerable.passages) == len(unanswerable.passages) == 3
    [gold] = [p for p in answerable.passages if p.answer_start is not None]
    assert gold.text[gold.answer_start : gold.answer_start + len(gold.answer_text)] == "William Douglass"
    negatives = [p.text for p in answerable.passages if p.answer_start is None]
    assert not any("William Douglass" in t for t in negatives)
    # At least one negative comes from another article than the question's own.
    assert any(t not in ARTICLES["Lighthouses"] for t in negatives)
    assert not unanswerable.answerable and all(p.answer_start is None for p in unanswerable.passages)


def test_alone_groups_read_a_share_of_the_questions_against_their_own_paragraph_only():
    import random

    from rag.offline.training import TrainConfig
    from rag.offline.training.lineage import TrainingError

    corpus = _questions()
    every = alone_groups(corpus, "squad", 1.0, random.Random(1), long_chars=3000)
    by_id = {g.id: g for g in every}
    assert len(every) == len(corpus) and all(len(g.passages) == 1 for g in every)
    q1 = by_id["q1"].passages[0]
    assert by_id["q1"].origin == "squad-alone" and q1.text == ARTICLES["Lighthouses"][0]
    assert q1.text[q1.answer_start : q1.answer_start + len(q1.answer_text)] == "William Douglass"
    assert by_id["q2"].origin == "squad-unanswerable-alone" and not by_id["q2"].answerable
    assert alone_groups(corpus, "squad", 0.0, random.Random(1), long_chars=3000) == []
    assert alone_groups(corpus, "squad", 1.0, random.Random(1), long_chars=60) == [
        g for g in every if len(g.passages[0].text) <= 60]  # whole papers are left to their groups
    half = [g.id for g in alone_groups(corpus, "squad", 0.5, random.Random(7), long_chars=3000)]
    assert 0 < len(half) < len(corpus) and half == [g.id for g in alone_groups(corpus, "squad", 0.5, random.Random(7), 3000)]
    with pytest.raises(TrainingError, match="alone-fraction"):
        TrainConfig(train_file="t.json", output="out", alone_fraction=1.5)


def test_group_windows_label_the_answer_and_mark_the_context(embedder):
    from transformers import AutoTokenizer

    from rag.config import Settings
    from rag.store.embedding import resolve_embedding_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_embedding_model("all-MiniLM-L6-v2"))
    corpus = _questions()
    groups, _ = retrieved_groups([q for q in corpus if q.id in ("q1", "q2")], corpus, "squad", embedder, Settings(), 3)
    items = group_items(tokenizer, groups, max_length=64, stride=16, max_windows_per_passage=8, max_windows=24)
    assert [item["answerable"] for item in items] == [True, False]
    answered = [w for w in items[0]["windows"] if w["start"] > 0]
    assert answered and all(tokenizer.decode(w["input_ids"][w["start"] : w["end"] + 1]) == "william douglass"
                            for w in answered)
    assert all(w["start"] == 0 for w in items[1]["windows"])
    parts = collate_groups(items)
    assert parts["group"].tolist() == [0] * len(items[0]["windows"]) + [1] * len(items[1]["windows"])
    first = items[0]["windows"][0]
    assert parts["context"][0].nonzero().flatten().tolist() == list(range(first["first"], first["last"] + 1))
    assert tokenizer.convert_ids_to_tokens(first["input_ids"][first["last"] + 1]) == "[SEP]"


@pytest.mark.slow
def test_the_calibration_set_adds_held_out_extra_questions_some_without_their_answer(tmp_path, embedder):
    """`rag calibrate-reader --extra`: the extra questions no run of the reader's lineage drew join the dev
    reads, each read against its own source, the dev split's share of them with the answer taken away (then
    labelled unanswerable); the report gives both threshold rules on dev, the held-out part and the whole set."""
    import json
    import shutil

    from rag.config import PACKAGED_READER_DIR
    from rag.offline.calibrate import calibrate_reader
    from rag.offline.calibration_set import answer_removed
    from rag.offline.import_reader import SHIPPED_CALIBRATION
    from rag.offline.squad import dev_questions, load_squad

    facts = [("The ferry to Inis Mor leaves from Rossaveal at nine.", "Where does the ferry leave from?", "Rossaveal"),
             ("The harbour master of Inis Mor is Sean Ryan.", "Who is the harbour master?", "Sean Ryan"),
             ("The lighthouse on the island was built in 1857.", "When was the lighthouse built?", "1857"),
             ("The island school has forty pupils and two teachers.", "How many pupils has the school?", "forty")]
    data = []
    for source in ("north", "south"):  # sources no run of the packaged reader's lineage drew from
        for i, (context, question, answer) in enumerate(facts):
            data.append({"title": f"{source}:doc{i}", "paragraphs": [{"context": context, "qas": [{
                "id": f"{source}-{i}", "question": question, "is_impossible": False,
                "answers": [{"text": answer, "answer_start": context.index(answer)}]}]}]})
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"version": "v2.0", "data": data}))
    reader = tmp_path / "reader"
    shutil.copytree(PACKAGED_READER_DIR, reader)
    meta = calibrate_reader(SHIPPED_CALIBRATION, reader, extra_file=extra, limit=20, embedder=embedder)
    report = meta["calibration_report"]
    share = sum(1 for q in dev_questions(load_squad(SHIPPED_CALIBRATION), 20) if not q.answers) / 20
    assert 0 < share < 1
    removed = sum(answer_removed(f"{s}-{i}", share) for s in ("north", "south") for i in range(4))
    assert report["calibration_set"] == {"dev_questions": 20, "heldout_extra_questions": 8,
                                         "heldout_answer_removed": removed, "heldout_sources": ["north", "south"],
                                         "heldout_removed_share": round(share, 4)}
    assert 0 < removed < 8
    for rule in ("max_f1", "cautious_0.5_f1"):
        assert {"threshold", "dev", "heldout_extra", "whole_set"} <= set(report["rules"][rule])
        assert report["rules"][rule]["whole_set"]["n"] == 28
    assert report["rules"]["cautious_0.5_f1"]["threshold"] >= report["rules"]["max_f1"]["threshold"]
    assert meta["calibrate_command"].endswith(f"--extra {extra} --removed-share {share:.4f}")
    # Every read the threshold was chosen on is stored for the feedback refit, the removed ones unanswerable.
    from rag.offline.feedback_calibration import READS_FILE, Reads

    reads = Reads.load(reader / READS_FILE)
    assert len(reads.questions) == 28
    held = {q.id: q for q in reads.questions if q.title.split(":")[0] in ("north", "south")}
    assert len(held) == 8 and sum(not q.answers for q in held.values()) == removed
    assert all(bool(held[f"{s}-{i}"].answers) != answer_removed(f"{s}-{i}", share) for s in ("north", "south") for i in range(4))
    # The share is fixed by each id: every question below it is removed, none above, at any share.
    ids = [f"q{i}" for i in range(2000)]
    assert not any(answer_removed(i, 0.0) for i in ids) and all(answer_removed(i, 1.0) for i in ids)
    assert {i for i in ids if answer_removed(i, 0.3)} <= {i for i in ids if answer_removed(i, 0.5)}
    assert 500 < sum(answer_removed(i, 0.3) for i in ids) < 700


def test_a_passage_holds_an_answer_whatever_the_answer_s_case_or_surrounding_white_space():
    """One rule for negatives (both recipes) and answer-removed calibration reads: the extra file has 393
    answers with white space around them, which a plain substring test can miss (" Paris " is not in
    "Paris,"), keeping a passage that holds the answer as a negative; an empty answer holds nothing."""
    from rag.offline.squad import holds_answer

    text = "The ferry leaves from Rossaveal, near Galway."
    assert holds_answer(text, [" Rossaveal "]) and holds_answer(text, ["GALWAY"])
    assert not holds_answer(text, ["Doolin"]) and not holds_answer(text, ["", "  "]) and not holds_answer(text, [])
    assert holds_answer(text, ["Doolin", "near galway"])
