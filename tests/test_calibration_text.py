"""nnlc.calibration.text: sentences with a tokenizer.json or a WordPiece vocab.txt."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto
from tokenizers import Tokenizer, models, pre_tokenizers, processors

import calibration_models
from nnlc.calibration import CalibrationError, CalibrationOptions, load_calibration

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "slept"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
SENTENCES = [
    "the cat sat on a mat", "the dog ran far away", "a cat slept", "the dog sat and slept",
    "", "a mat", "the cat ran away and the dog sat on the mat", "the cat sat on a mat",  # blank, duplicate
    "dog and cat", "far away a dog slept", "  the mat  ",
]
UNIQUE = 9


def _tokenizer_json(path):
    vocab = {token: index for index, token in enumerate(SPECIALS + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.save(str(path))
    return str(path)


def _vocab_txt(path, tokens=SPECIALS + WORDS + ["##s"]):
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture
def sentences(tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return str(path)


def _all(calibration):
    return calibration.optimise + calibration.holdout


def _check_padded(feed, cls_id=2, sep_id=3, pad_id=0):
    ids, mask = feed["input_ids"], feed["attention_mask"]
    assert ids.dtype == np.int64 and ids.shape == mask.shape == feed["token_type_ids"].shape
    assert (ids[:, 0] == cls_id).all() and mask.sum(axis=1).max() == ids.shape[1]  # padded to the longest
    for row, row_mask in zip(ids, mask):
        length = int(row_mask.sum())
        assert row[length - 1] == sep_id and (row[length:] == pad_id).all() and row_mask[:length].all()


@pytest.mark.parametrize("kind", ["json", "vocab"])
def test_sentences_are_tokenised_and_padded_within_each_feed(tmp_path, sentences, kind):
    tokenizer = (_tokenizer_json(tmp_path / "tokenizer.json") if kind == "json"
                 else _vocab_txt(tmp_path / "vocab.txt"))
    model = calibration_models.text_model()
    calibration = load_calibration(sentences, model, CalibrationOptions(tokenizer=tokenizer, batch_size=4))
    assert calibration.n_optimise + calibration.n_holdout == UNIQUE and calibration.n_holdout == 2
    for feed in _all(calibration):
        _check_padded(feed)
        assert not feed["token_type_ids"].any()
    def rows(feeds):
        return {tuple(r[m == 1]) for f in feeds for r, m in zip(f["input_ids"], f["attention_mask"])}

    assert not rows(calibration.optimise) & rows(calibration.holdout)
    assert len(rows(_all(calibration))) == UNIQUE
    calibration_models.run_all(model, _all(calibration))


def test_tokenizers_agree_on_a_plain_vocabulary(tmp_path, sentences):
    by_json = load_calibration(sentences, calibration_models.text_model(),
                               CalibrationOptions(tokenizer=_tokenizer_json(tmp_path / "t.json")))
    by_vocab = load_calibration(sentences, calibration_models.text_model(),
                                CalibrationOptions(tokenizer=_vocab_txt(tmp_path / "vocab.txt")))
    for a, b in zip(_all(by_json), _all(by_vocab), strict=True):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])


def test_only_the_graph_inputs_truncation_and_int32(tmp_path, sentences):
    tokenizer = _tokenizer_json(tmp_path / "tokenizer.json")
    model = calibration_models.text_model(("input_ids", "attention_mask"), dtype=TensorProto.INT32)
    calibration = load_calibration(sentences, model, CalibrationOptions(tokenizer=tokenizer, max_length=4))
    for feed in _all(calibration):
        assert set(feed) == {"input_ids", "attention_mask"} and feed["input_ids"].dtype == np.int32
        assert feed["input_ids"].shape[1] <= 4


def test_fixed_sequence_length_pads_to_it(tmp_path, sentences):
    model = calibration_models.text_model(seq=6)
    calibration = load_calibration(sentences, model, CalibrationOptions(tokenizer=_vocab_txt(tmp_path / "v.txt")))
    assert all(feed["input_ids"].shape[1] == 6 for feed in _all(calibration))
    calibration_models.run_all(model, _all(calibration))


def test_samples_cap_and_determinism(tmp_path, sentences):
    options = CalibrationOptions(tokenizer=_vocab_txt(tmp_path / "vocab.txt"), samples=5, seed=2)
    first, second = (load_calibration(sentences, calibration_models.text_model(), options) for _ in range(2))
    assert first.n_optimise + first.n_holdout == 5
    for a, b in zip(_all(first), _all(second), strict=True):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])


def test_builtin_text_with_a_given_vocabulary(tmp_path):
    calibration = load_calibration("text", calibration_models.text_model(),
                                   CalibrationOptions(tokenizer=_vocab_txt(tmp_path / "vocab.txt"), samples=16))
    assert calibration.n_optimise == 12 and calibration.n_holdout == 4
    assert calibration.description.startswith("built-in text:")


def test_missing_default_vocabulary_asks_for_a_tokenizer(tmp_path, sentences, monkeypatch):
    import nnlc.fidelity

    monkeypatch.setattr(nnlc.fidelity, "default_vocab_path", lambda: tmp_path / "absent.vocab.txt")
    for source in (sentences, "text"):
        with pytest.raises(CalibrationError, match="needs a tokenizer: pass --tokenizer"):
            load_calibration(source, calibration_models.text_model())


def test_bad_tokenizers(tmp_path, sentences):
    model = calibration_models.text_model()
    with pytest.raises(CalibrationError, match="tokenizer not found: .*nothing.json"):
        load_calibration(sentences, model, CalibrationOptions(tokenizer=str(tmp_path / "nothing.json")))
    broken = tmp_path / "broken.json"
    broken.write_text("{\"model\": 3")
    with pytest.raises(CalibrationError, match="broken.json: not a readable tokenizer.json"):
        load_calibration(sentences, model, CalibrationOptions(tokenizer=str(broken)))
    lacking = _vocab_txt(tmp_path / "lacking.txt", ["[PAD]", "[UNK]"] + WORDS)
    with pytest.raises(CalibrationError, match=r"lacking.txt: not a usable WordPiece vocab.txt .*\[CLS\]"):
        load_calibration(sentences, model, CalibrationOptions(tokenizer=lacking))


def test_bad_text_files_and_models(tmp_path):
    vocab = _vocab_txt(tmp_path / "vocab.txt")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    with pytest.raises(CalibrationError, match="blank.txt: no sentences"):
        load_calibration(str(blank), calibration_models.text_model(), CalibrationOptions(tokenizer=vocab))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\xfa not utf-8")
    with pytest.raises(CalibrationError, match="binary.txt: unreadable text file"):
        load_calibration(str(binary), calibration_models.text_model(), CalibrationOptions(tokenizer=vocab))
    one = tmp_path / "one.txt"
    one.write_text("the cat\n")
    with pytest.raises(CalibrationError, match="at least 2"):
        load_calibration(str(one), calibration_models.text_model(), CalibrationOptions(tokenizer=vocab))
    with pytest.raises(CalibrationError, match="needs a model input named 'input_ids'"):
        load_calibration(str(one), calibration_models.float_model(), CalibrationOptions(tokenizer=vocab))
    model = calibration_models.text_model()
    model.graph.input.extend(calibration_models.float_model().graph.input)
    with pytest.raises(CalibrationError, match="'x' is left without data"):
        load_calibration(str(one), model, CalibrationOptions(tokenizer=vocab))
