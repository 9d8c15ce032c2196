import pytest

from rag.offline.squad import exact_match, normalize_answer, score_prediction, token_f1


def test_official_normalisation():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"


def test_unicode_folding_of_typographic_punctuation():
    assert exact_match("Fei‑Fei Li", "Fei-Fei Li") == 1.0  # non-breaking hyphen
    assert exact_match("“compute‑algorithm‑talent” race", '"compute-algorithm-talent" race') == 1.0
    assert exact_match("Anthropic’s team", "Anthropic's team") == 1.0
    assert exact_match("2015–2017", "2015-2017") == 1.0  # en dash
    assert normalize_answer("x\u00a0y") == "x y"
    # Characters NFKC leaves alone (or maps to another non-ASCII one): only the folding table makes these equal.
    for typographic, plain in (("‘Eric’", "'Eric'"), ("Fei‑Fei", "Fei-Fei"), ("5−3", "5-3"), ("1999–2001", "1999-2001")):
        assert normalize_answer(typographic) == normalize_answer(plain), typographic


def test_token_f1_partial_overlap():
    assert token_f1("Eric Boyd", "a former Microsoft executive, Eric Boyd") == pytest.approx(2 * 1 * 0.4 / 1.4)
    assert token_f1("Microsoft", "Eric Boyd") == 0.0


def test_squad2_convention_for_unanswerable_questions():
    assert score_prediction(None, []) == (1.0, 1.0)
    assert score_prediction("Paris", []) == (0.0, 0.0)
    assert score_prediction(None, ["Eric Boyd"]) == (0.0, 0.0)
    assert score_prediction("eric boyd.", ["Eric Boyd", "Boyd"]) == (1.0, 1.0)


