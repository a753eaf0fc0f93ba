"""Calibration sentences: a text file (one sentence a line) or the built-in train sentences.

Tokenizer: `options.tokenizer` is a Hugging Face `tokenizer.json` (read with the `tokenizers`
library, truncation to `max_length`, its own post-processor adding [CLS] / [SEP] where it has
one) or a BERT WordPiece `vocab.txt` (`nnlc.data.text.WordPieceTokenizer`); without one, the
MiniLM vocabulary of ../shared/models (`nnlc.fidelity.default_vocab_path()`) if it is there.
Each sentence is encoded once; a feed holds the graph's int inputs among input_ids /
attention_mask / token_type_ids, right-padded to the longest sentence of the feed (to the fixed
sequence length where the graph has one). Blank and repeated lines are dropped, so no sentence is
on both sides of the split; at most `samples` sentences are used (a seeded subset).

The built-in `text` source uses the *train* sentences of `nnlc.data.text`; fidelity is measured
on the held-out ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from nnlc.calibration.base import (
    CalibrationError, CalibrationOptions, CalibrationSet, InputSpec, Progress, Samples,
    batch_size_for, input_specs, split_and_batch, split_note, subsample,
)

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>")

# (sentences) -> [(ids, type_ids)] per sentence, and the padding id
Encoder = tuple[Callable[[list[str]], list[tuple[list[int], list[int]]]], int]


def _hf_encoder(path: Path, max_length: int) -> Encoder:
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust side raises plain Exception
        raise CalibrationError(f"{path}: not a readable tokenizer.json ({error})") from None
    padding = tokenizer.padding
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    pad_id = padding["pad_id"] if padding else next(
        (tokenizer.token_to_id(t) for t in PAD_TOKENS if tokenizer.token_to_id(t) is not None), 0)

    def encode(sentences: list[str]) -> list[tuple[list[int], list[int]]]:
        return [(list(e.ids), list(e.type_ids)) for e in tokenizer.encode_batch(sentences)]

    return encode, int(pad_id)


def _wordpiece_encoder(path: Path, max_length: int) -> Encoder:
    from nnlc.data.text import WordPieceTokenizer

    try:
        tokenizer = WordPieceTokenizer(path, max_length=max_length)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CalibrationError(f"{path}: not a usable WordPiece vocab.txt ({error})") from None

    def encode(sentences: list[str]) -> list[tuple[list[int], list[int]]]:
        return [(ids, [0] * len(ids)) for ids in (tokenizer.encode(s) for s in sentences)]

    return encode, tokenizer.pad_id


def make_encoder(tokenizer: str | None, max_length: int) -> tuple[Encoder, str]:
    """The encoder for `tokenizer` (path) or the default MiniLM vocabulary, and its name."""
    if tokenizer is None:
        from nnlc.fidelity import default_vocab_path

        path = default_vocab_path()
        if not path.is_file():
            raise CalibrationError(f"text calibration needs a tokenizer: pass --tokenizer=tokenizer.json or "
                                   f"vocab.txt (the default MiniLM vocabulary {path} is absent)")
    else:
        path = Path(tokenizer)
        if not path.is_file():
            raise CalibrationError(f"tokenizer not found: {path}")
    make = _hf_encoder if path.suffix.lower() == ".json" else _wordpiece_encoder
    return make(path, max_length), path.name


def text_inputs(specs: list[InputSpec]) -> tuple[dict[str, InputSpec], int | None]:
    """The graph's text inputs by name, and the fixed sequence length if the graph has one."""
    by_name = {spec.name: spec for spec in specs}
    if "input_ids" not in by_name:
        raise CalibrationError("text calibration needs a model input named 'input_ids' (inputs: "
                               + (", ".join(by_name) or "none") + ")")
    for spec in specs:
        if spec.name not in TEXT_INPUTS:
            raise CalibrationError(f"text calibration: model input {spec.name!r} is left without data "
                                   f"(text fills {', '.join(TEXT_INPUTS)})")
        if spec.dtype.kind not in "iu" or spec.rank not in (None, 2):
            raise CalibrationError(f"text calibration: input {spec.name!r} {spec.describe()} is not an "
                                   f"integer [batch, sequence] tensor")
    lengths = {spec.dims[1] for spec in specs if spec.dims and spec.dims[1] is not None}
    if len(lengths) > 1:
        raise CalibrationError(f"text inputs have different fixed sequence lengths {sorted(lengths)}")
    return by_name, (lengths.pop() if lengths else None)


def _sentence_set(sentences: list[str], model: onnx.ModelProto, options: CalibrationOptions,
                  where: str, progress: Progress | None) -> tuple[CalibrationSet, str, int]:
    specs = input_specs(model)
    by_name, fixed_length = text_inputs(specs)
    max_length = min(options.max_length, fixed_length) if fixed_length else options.max_length
    (encode, pad_id), tokenizer_name = make_encoder(options.tokenizer, max_length)
    unique = list(dict.fromkeys(s for s in (line.strip() for line in sentences) if s))
    if not unique:
        raise CalibrationError(f"{where}: no sentences (all lines are blank)")
    chosen = [unique[i] for i in subsample(len(unique), options.samples,
                                           np.random.default_rng([options.seed, 0]))]
    try:
        encoded = encode(chosen)
    except Exception as error:  # tokenizers raises plain Exception
        raise CalibrationError(f"{where}: the tokenizer {tokenizer_name} fails ({error})") from None
    if progress is not None:
        progress(len(chosen), len(chosen), "calibration sentences")

    def collate(indices: np.ndarray) -> dict[str, np.ndarray]:
        rows = [encoded[int(i)] for i in indices]
        length = fixed_length or max(len(ids) for ids, _ in rows)
        ids = np.full((len(rows), length), pad_id, np.int64)
        types = np.zeros((len(rows), length), np.int64)
        mask = np.zeros((len(rows), length), np.int64)
        for row, (token_ids, type_ids) in enumerate(rows):
            ids[row, :len(token_ids)] = token_ids
            types[row, :len(type_ids)] = type_ids
            mask[row, :len(token_ids)] = 1
        values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: values[name] for name in by_name}

    samples = Samples(len(chosen), np.arange(len(chosen)), collate=collate)
    batch = batch_size_for(specs, list(by_name), options)
    result, by_group = split_and_batch(samples, specs, options, where, batch=batch)
    return result, f"{tokenizer_name} {split_note(result, by_group, 'sentence')}", len(unique)


def load_text_file(path: Path, model: onnx.ModelProto, options: CalibrationOptions,
                   progress: Progress | None = None) -> CalibrationSet:
    """Tokenised sentences of a text file, one a line (see the module docstring)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CalibrationError(f"{path}: unreadable text file ({type(error).__name__}: {error})") from None
    result, what, count = _sentence_set(lines, model, options, str(path), progress)
    result.description = f"sentences in {path}: {count} -> {result.n_optimise + result.n_holdout} used, {what}"
    return result


def load_builtin_text(model: onnx.ModelProto, options: CalibrationOptions,
                      progress: Progress | None = None) -> CalibrationSet:
    """Tokenised *train* sentences of `nnlc.data.text` (pydoc topics)."""
    from nnlc.data import text as data_text

    sentences = data_text.sentences(split="train", seed=options.seed)
    result, what, count = _sentence_set(sentences, model, options, "built-in text", progress)
    result.description = (f"built-in text: {count} train sentences -> {result.n_optimise + result.n_holdout} "
                          f"used, {what}")
    return result
