"""pydoc sentences and the WordPiece tokenizer (on a tiny vocabulary written here)."""

import numpy as np
import pytest

from nnlc.data import text

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn",
              "##ing", ",", "!", ".", "hello", "world", "cafe", "中"]


@pytest.fixture
def tokenizer(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return text.WordPieceTokenizer(path, max_length=8)


def test_greedy_longest_match_with_continuations(tokenizer):
    assert tokenizer.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert tokenizer.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]


def test_lower_case_accents_and_punctuation(tokenizer):
    assert tokenizer.tokenize("HELLO,World!") == ["hello", ",", "world", "!"]
    assert tokenizer.tokenize("  Café.\t") == ["cafe", "."]
    assert text.basic_tokenize("a\u00adb 中文") == ["ab", "中", "文"]


def test_batch_is_padded_int64_with_cls_and_sep(tokenizer):
    batch = tokenizer(["hello world", "running"])
    ids = TINY_VOCAB.index
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(array.dtype == np.int64 and array.shape == (2, 4) for array in batch.values())
    np.testing.assert_array_equal(batch["input_ids"],
                                  [[ids("[CLS]"), ids("hello"), ids("world"), ids("[SEP]")],
                                   [ids("[CLS]"), ids("runn"), ids("##ing"), ids("[SEP]")]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1, 1], [1, 1, 1, 1]])
    padded = tokenizer(["hello", "hello world , hello"])
    np.testing.assert_array_equal(padded["attention_mask"][0], [1, 1, 1, 0, 0, 0])
    assert padded["input_ids"][0, 3:].tolist() == [ids("[PAD]")] * 3
    assert not padded["token_type_ids"].any()


def test_truncation_keeps_sep_last(tokenizer):
    batch = tokenizer("hello " * 20)
    assert batch["input_ids"].shape == (1, 8)
    assert batch["input_ids"][0, -1] == TINY_VOCAB.index("[SEP]")
    assert tokenizer("hello " * 20, max_length=5)["input_ids"].shape == (1, 5)


def test_vocab_without_special_tokens_is_rejected(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("a\nb\n")
    with pytest.raises(ValueError):
        text.WordPieceTokenizer(path)


def test_sentences_are_prose_and_plentiful():
    pool = text.all_sentences()
    assert len(pool) > 500 and len(set(pool)) == len(pool)
    assert all(sentence[0].isupper() and sentence[-1] in ".!?" for sentence in pool)
    assert len(text.split_sentences("heldout")) >= 200


def test_sentence_splits_are_disjoint_whatever_the_seeds():
    train = set(text.sentences(None, seed=1, split="train"))
    heldout = set(text.sentences(None, seed=2, split="heldout"))
    assert not train & heldout
    assert len(train) + len(heldout) == len(text.all_sentences())


def test_sentences_are_seeded():
    assert text.sentences(20, seed=4) == text.sentences(20, seed=4)
    assert text.sentences(20, seed=4) != text.sentences(20, seed=5)
    assert len(text.sentences(20, seed=4)) == 20
