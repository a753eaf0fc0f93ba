"""English sentences from CPython's `pydoc_data.topics` and a BERT-style WordPiece tokenizer.

Sentences: paragraphs of every topic (grammar rules, doctests and headings dropped) are
split at '.', '!' or '?' followed by a capital; a sentence is kept if it has 5-40 words and is
mostly letters. The text comes with the running Python, so it differs a little between versions.

Train / held-out split: by sentence content, independent of any seed: a sentence is held out when
crc32 of its UTF-8 bytes is 0 mod 5 (about 20%). `sentences(n, seed, split)` then shuffles the
split with `np.random.default_rng(seed)` and takes the first `n`.

`WordPieceTokenizer` follows BERT's uncased tokenizer: clean control characters, space out CJK
characters, lower-case, strip accents, split on whitespace and punctuation, then greedy
longest-match WordPiece with '##' continuations ([UNK] for a word that cannot be matched).
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
import zlib

import numpy as np

from nnlc.data import check_split

HELDOUT_MODULUS = 5
MIN_WORDS, MAX_WORDS = 5, 40
MAX_CHARS_PER_WORD = 100
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_HEADING_RULE = re.compile(r"^[*=\-~^]{3,}$")


def _prose_paragraphs(document: str) -> list[str]:
    """Paragraphs that are neither headings nor grammar rules nor doctests, lines re-joined.

    Indented paragraphs are kept (list items and definitions are prose); code that survives is
    rejected later, sentence by sentence. A line ending in '-' continues a hyphenated word.
    """
    paragraphs = []
    for block in re.split(r"\n\s*\n", document):
        lines = [line.strip() for line in block.split("\n")]
        if any(_HEADING_RULE.match(line) for line in lines) or "::=" in block or ">>>" in block:
            continue
        joined = ""
        for line in lines:
            joined += line if joined.endswith("-") or not joined else " " + line
        paragraphs.append(joined)
    return paragraphs


def _is_prose_sentence(sentence: str) -> bool:
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    if not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    letters = sum(character.isalpha() or character == " " for character in sentence)
    return letters >= 0.85 * len(sentence)


@functools.lru_cache(maxsize=1)
def all_sentences() -> tuple[str, ...]:
    """Every distinct prose sentence of `pydoc_data.topics`, sorted."""
    from pydoc_data.topics import topics

    found = set()
    for key in sorted(topics):
        for paragraph in _prose_paragraphs(topics[key]):
            for sentence in _SENTENCE_END.split(re.sub(r"\s+", " ", paragraph).strip()):
                if _is_prose_sentence(sentence):
                    found.add(sentence)
    return tuple(sorted(found))


def is_heldout_sentence(sentence: str) -> bool:
    """Whether `sentence` belongs to the held-out split (crc32 mod 5 == 0)."""
    return zlib.crc32(sentence.encode("utf-8")) % HELDOUT_MODULUS == 0


def split_sentences(split: str) -> list[str]:
    """All sentences of `split`, sorted."""
    heldout = check_split(split) == "heldout"
    return [s for s in all_sentences() if is_heldout_sentence(s) == heldout]


def sentences(n: int | None = None, seed: int = 0, split: str = "heldout") -> list[str]:
    """`n` sentences of `split` (all if None) in a seeded random order."""
    pool = split_sentences(split)
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[index] for index in order[:n]]


def _is_punctuation(character: str) -> bool:
    code = ord(character)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(character).startswith("P")


def _is_cjk(code: int) -> bool:
    return (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2A6DF
            or 0x2A700 <= code <= 0x2CEAF or 0xF900 <= code <= 0xFAFF or 0x2F800 <= code <= 0x2FA1F)


def _clean(text: str) -> str:
    characters = []
    for character in text:
        code = ord(character)
        if code == 0 or code == 0xFFFD:
            continue
        if character in " \t\n\r" or unicodedata.category(character) == "Zs":
            characters.append(" ")
        elif unicodedata.category(character).startswith("C"):
            continue
        elif _is_cjk(code):
            characters.append(f" {character} ")
        else:
            characters.append(character)
    return "".join(characters)


def basic_tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Whitespace and punctuation split, after lower-casing and stripping accents."""
    tokens = []
    for word in _clean(text).split():
        if lowercase:
            word = unicodedata.normalize("NFD", word.lower())
            word = "".join(c for c in word if unicodedata.category(c) != "Mn")
        current = ""
        for character in word:
            if _is_punctuation(character):
                if current:
                    tokens.append(current)
                tokens.append(character)
                current = ""
            else:
                current += character
        if current:
            tokens.append(current)
    return tokens


def load_vocab(vocab_path: str | os.PathLike) -> dict[str, int]:
    """One token per line; the id is the line number."""
    with open(vocab_path, encoding="utf-8") as file:
        return {line.rstrip("\n"): index for index, line in enumerate(file)}


class WordPieceTokenizer:
    """BERT uncased WordPiece: `tokenizer(texts)` gives padded int64 model inputs."""

    def __init__(self, vocab_path: str | os.PathLike, max_length: int = 128,
                 lowercase: bool = True) -> None:
        self.vocab = load_vocab(vocab_path)
        self.max_length = max_length
        self.lowercase = lowercase
        for token in ("[CLS]", "[SEP]", "[PAD]", "[UNK]"):
            if token not in self.vocab:
                raise ValueError(f"vocabulary {vocab_path} lacks {token}")
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]

    def wordpiece(self, word: str) -> list[str]:
        """Greedy longest-match split of one word; ['[UNK]'] if any remainder has no match."""
        if len(word) > MAX_CHARS_PER_WORD:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Word pieces of `text`, without [CLS] / [SEP]."""
        return [piece for word in basic_tokenize(text, self.lowercase)
                for piece in self.wordpiece(word)]

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """[CLS] ids [SEP], the pieces truncated so the whole fits `max_length`."""
        limit = (max_length or self.max_length) - 2
        ids = [self.vocab.get(piece, self.unk_id) for piece in self.tokenize(text)][:limit]
        return [self.cls_id, *ids, self.sep_id]

    def __call__(self, texts: list[str] | str,
                 max_length: int | None = None) -> dict[str, np.ndarray]:
        """`input_ids`, `attention_mask`, `token_type_ids`: int64 [batch, longest], right-padded."""
        if isinstance(texts, str):
            texts = [texts]
        encoded = [self.encode(text, max_length) for text in texts]
        length = max(len(ids) for ids in encoded)
        input_ids = np.full((len(encoded), length), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(encoded), length), dtype=np.int64)
        for row, ids in enumerate(encoded):
            input_ids[row, :len(ids)] = ids
            attention_mask[row, :len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "token_type_ids": np.zeros_like(input_ids)}
