"""Calibration inputs: what `nnlc compress IN.onnx --calibrate=SOURCE` optimises on.

`load_calibration(source, model, options)` returns a `CalibrationSet`: onnxruntime feeds split
into an optimisation part and a disjoint hold-out (which only checks fidelity). SOURCE is one of

- `PATH.npz`: one array per graph input (samples on the first axis, or stacked feeds) -- arrays.py
- a folder of png / jpg / jpeg photos: seeded random crops, split by photo -- images.py
- a folder of wav files: frames for Silero-style or fixed-window models, split by clip -- audio.py
- `PATH.txt`, one sentence a line, with `tokenizer` = tokenizer.json or vocab.txt -- text.py
- `package.module:function`: a callable returning an iterable of feeds -- arrays.py
- built-in offline sources `images`, `audio`, `text` (the *train* splits of nnlc.data; fidelity
  uses the held-out splits) and `gaussian`.

Bad input raises `CalibrationError` with one line naming the file or input; nothing is written.
Same source + options give identical arrays (sorted file lists, seeded numpy Generators).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from nnlc.calibration.base import (
    CalibrationError, CalibrationOptions, CalibrationSet, InputSpec, Progress, check_feed, check_options,
    graph_inputs, input_specs,
)

BUILTIN_SOURCES = ("images", "audio", "text", "gaussian")

__all__ = [
    "BUILTIN_SOURCES", "CalibrationError", "CalibrationOptions", "CalibrationSet", "InputSpec",
    "check_feed", "graph_inputs", "input_specs", "load_calibration",
]


def _load_folder(directory: Path, model, options, progress) -> CalibrationSet:
    from nnlc.calibration import audio, images

    try:
        pictures, wavs = images.image_files(directory), audio.wav_files(directory)
    except OSError as error:
        raise CalibrationError(f"{directory}: cannot list the folder ({error})") from None
    if pictures and wavs:
        raise CalibrationError(f"{directory}: holds both images ({len(pictures)}) and wav files "
                               f"({len(wavs)}); give a folder of one kind")
    if pictures:
        return images.load_image_folder(directory, model, options, progress)
    if wavs:
        return audio.load_wav_folder(directory, model, options, progress)
    raise CalibrationError(f"{directory}: no usable files (png, jpg, jpeg or wav)")


def load_calibration(source: str, model: onnx.ModelProto, options: CalibrationOptions | None = None,
                     progress: Progress | None = None) -> CalibrationSet:
    """Calibration feeds from `source` for `model` (see the module docstring).

    `progress(done, total, label)` is called during long loads.
    """
    from nnlc.calibration import arrays

    options = options if options is not None else CalibrationOptions()
    check_options(options)
    source = str(source)
    if source in BUILTIN_SOURCES:
        if source == "gaussian":
            return arrays.load_gaussian(model, options, progress)
        if source == "images":
            from nnlc.calibration.images import load_builtin_images

            return load_builtin_images(model, options, progress)
        if source == "audio":
            from nnlc.calibration.audio import load_builtin_audio

            return load_builtin_audio(model, options, progress)
        from nnlc.calibration.text import load_builtin_text

        return load_builtin_text(model, options, progress)
    path = Path(source)
    if path.is_dir():
        return _load_folder(path, model, options, progress)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return arrays.load_npz(path, model, options, progress)
        if suffix == ".txt":
            from nnlc.calibration.text import load_text_file

            return load_text_file(path, model, options, progress)
        raise CalibrationError(f"{path}: unknown calibration file type {path.suffix or '(none)'}; "
                               f"give an .npz, a .txt, or a folder of images or wavs")
    if arrays.is_callable_source(source):
        return arrays.load_callable(source, model, options, progress)
    raise CalibrationError(f"calibration source not found: {source} (a file, a folder, "
                           f"package.module:function, or one of {', '.join(BUILTIN_SOURCES)})")
