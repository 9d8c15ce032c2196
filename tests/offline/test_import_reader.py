"""`rag calibrate-reader --model DIR --output OUT` with tiny random models of each architecture, built here:
BERT and ELECTRA word pieces, RoBERTa's byte-level BPE (offsets that take in the space before a word) and
DistilBERT (no token_type_ids). Each becomes a calibrated reader folder that the pipeline serves with exact
offsets."""
import json

import pytest
import torch

from rag.records import Document

from helpers import cli

pytestmark = pytest.mark.slow  # models made, calibrated and served by `rag calibrate-reader`

TEXT = ("The Fastnet Rock lighthouse was designed by William Douglass and completed in 1904 off the south "
        "coast of Ireland. Its keepers left in 1989, when the light became automatic. The 39-year-old engineer "
        "who automated it was called Mary O'Brien.")
CORPUS = [TEXT, "Lighthouses were lit by whale oil, then paraffin, then electricity.",
          "The Normans gave their name to Normandy, a region in the north of France.", "Solar energy is light."] * 5


def _wordpiece(folder, distil: bool = False):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    names = ["input_ids", "attention_mask"] if distil else ["input_ids", "token_type_ids", "attention_mask"]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   pad_token="[PAD]", mask_token="[MASK]", model_input_names=names)
    fast.save_pretrained(folder)
    return fast


def _byte_level(folder):
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tok = ByteLevelBPETokenizer(add_prefix_space=True, trim_offsets=False)
    tok.train_from_iterator(CORPUS, vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
                                                      trim_offsets=False, add_prefix_space=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok._tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   sep_token="</s>", cls_token="<s>", pad_token="<pad>", mask_token="<mask>",
                                   model_input_names=["input_ids", "attention_mask"])
    fast.save_pretrained(folder)
    return fast


def _tiny(kind: str, folder):
    import transformers as t

    torch.manual_seed(0)
    small = dict(num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, hidden_size=32)
    if kind == "roberta":
        tok = _byte_level(folder)
        config = t.RobertaConfig(vocab_size=len(tok), max_position_embeddings=520, type_vocab_size=1,
                                 pad_token_id=tok.pad_token_id, **small)
    elif kind == "distilbert":
        tok = _wordpiece(folder, distil=True)
        config = t.DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                                    max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    elif kind == "electra":
        tok = _wordpiece(folder)
        config = t.ElectraConfig(vocab_size=len(tok), embedding_size=32, max_position_embeddings=512, **small)
    else:
        tok = _wordpiece(folder)
        config = t.BertConfig(vocab_size=len(tok), max_position_embeddings=512, **small)
    t.AutoModelForQuestionAnswering.from_config(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["bert", "electra", "roberta", "distilbert"])
def test_a_tiny_model_of_each_architecture_becomes_a_reader_that_serves_exact_offsets(kind, tmp_path, embedder):
    from rag.offline.calibrate import calibrate_reader
    from rag.offline.import_reader import SHIPPED_CALIBRATION, import_reader
    from rag.pipeline.qa import Pipeline

    model = _tiny(kind, tmp_path / "model")
    out = tmp_path / "reader"
    meta = import_reader(str(model), out, lambda folder: calibrate_reader(SHIPPED_CALIBRATION, folder, limit=12,
                                                                           embedder=embedder))
    assert meta["architecture"] == kind and meta["calibration"]["threshold"] > 0
    assert meta["calibration_report"]["open_domain"]["at_threshold"]["n"] == 12
    assert {"model.safetensors", "tokenizer.json", "reader_meta.json", "config.json",
            "calibration_reads.json"} <= {p.name for p in out.iterdir()}
    assert not list(tmp_path.glob(".reader.building"))

    with Pipeline.from_documents([Document("light.txt", TEXT)], reader_model=str(out)) as pipeline:
        [reading] = pipeline.reader.read_pairs(["Who designed the lighthouse?"], [TEXT])
        assert reading.spans, "a random model still offers spans"
        for span in reading.spans:  # exact offsets, no space taken in (byte-level BPE), no word cut
            assert TEXT[span.start : span.end] == span.text and span.text == span.text.strip()
            assert not (span.start > 0 and TEXT[span.start - 1].isalnum() and TEXT[span.start].isalnum())
            assert not (span.end < len(TEXT) and TEXT[span.end - 1].isalnum() and TEXT[span.end].isalnum())
        answer = pipeline.ask("Who designed the lighthouse?")
        assert answer.calibrated
        for c in answer.citations:
            assert TEXT[c.start : c.end] == answer.answer


def test_the_command_refuses_a_model_it_cannot_get_and_never_replaces_a_folder(tmp_path):
    """Offline, a hub id fails in one line and leaves nothing; an existing folder is never written over;
    an encoder without a QA head is refused."""
    r = cli("calibrate-reader", "--model", "deepset/roberta-base-squad2", "--output", tmp_path / "roberta")
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "cannot be downloaded" in r.stderr and not (tmp_path / "roberta").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    r = cli("calibrate-reader", "--model", tmp_path, "--output", taken)
    assert r.returncode != 0 and "already exists" in r.stderr and (taken / "notes.txt").read_text() == "mine"
    import transformers as t

    encoder = tmp_path / "encoder"
    tok = _wordpiece(encoder)
    t.BertModel(t.BertConfig(vocab_size=len(tok), num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             hidden_size=32)).save_pretrained(encoder)
    r = cli("calibrate-reader", "--model", encoder, "--output", tmp_path / "headless")
    assert r.returncode != 0 and "no trained question-answering head" in r.stderr
    assert not (tmp_path / "headless").exists()


def test_the_command_writes_a_reader_folder_from_the_shipped_questions(tmp_path):
    model = _tiny("roberta", tmp_path / "model")
    r = cli("calibrate-reader", "--model", model, "--output", tmp_path / "reader", "--questions", "20", timeout=600)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "reader" / "reader_meta.json").read_text())
    assert meta["source_model"] == str(model) and meta["calibrate_command"].endswith(f"--output {tmp_path / 'reader'}")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "light.txt").write_text(TEXT)
    asked = cli("ask", "--docs", tmp_path / "docs", "--index", tmp_path / "index", "--reader", tmp_path / "reader", "--json",
                "Who designed the lighthouse?")
    assert asked.returncode == 0, asked.stderr
