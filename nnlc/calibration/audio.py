"""Calibration audio: a folder of wav files, or the built-in train clips, framed for the model.

Clips are read as mono PCM (`nnlc.data.audio.read_wav`, after a check that the file holds every
frame its header promises) and resampled to `sample_rate` (default 16 kHz) by FFT (band-limited).
Three model formats:

- sequence (inputs `input` [T, 576], `h`, `c`, like `silero_vad_16k_sequence`): a feed is one
  chunk of up to `SEQUENCE_CHUNK` consecutive frames of one clip (`sequence_input` rows; fewer
  where `samples` is small, so that there are >= 4 chunks) with zero h and c; `sequential=True`;
  a sample is a frame.
- stateful (inputs `input`, `state`, `sr`, like `silero_vad`): the ORIGINAL model is run frame by
  frame over each clip (onnxruntime) and each sample is one frame with the state the original had
  before it (teacher forcing); frames are batched along the state's dynamic batch axis. A model
  that branches on `sr` (an `If`) is calibrated at 16 and 8 kHz (clips resampled), so both of its
  networks are measured and checked; `sample_rate` picks one.
- generic: one float input whose last dim is the fixed window length L ([L], [B, L] or
  [B, 1, L]): clips are cut into non-overlapping windows of L (a shorter clip is zero-padded).

At most `samples` frames / windows are used (a seeded subset); there are no synthetic variants,
so short audio gives fewer. The split is by clip where there are >= 4 clips.
"""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import onnx

from nnlc.calibration.base import (
    CalibrationError, CalibrationOptions, CalibrationSet, InputSpec, Progress, Samples, input_specs,
    Stream, is_sequence_model, is_stateful_model, report, split_and_batch, split_feeds, split_note, subsample,
)
from nnlc.data import audio as data_audio

SEQUENCE_CHUNK = 64
SILERO_RATE = data_audio.SAMPLE_RATE


def wav_files(directory: Path) -> list[Path]:
    """Sorted .wav files (any case) directly in `directory`."""
    return sorted(path for path in directory.iterdir() if path.is_file() and path.suffix.lower() == ".wav")


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling by zero-padding or truncating the spectrum (float32)."""
    if rate_in == rate_out or samples.size == 0:
        return np.asarray(samples, np.float32)
    n_out = max(1, int(round(samples.size * rate_out / rate_in)))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    bins = n_out // 2 + 1
    resized = np.zeros(bins, np.complex128)
    keep = min(bins, spectrum.size)
    resized[:keep] = spectrum[:keep]
    return (np.fft.irfft(resized, n_out) * (n_out / samples.size)).astype(np.float32)


def read_clip(path: Path, rate: int) -> np.ndarray:
    """Mono float32 samples of a PCM wav file at `rate`; CalibrationError if unreadable or truncated."""
    try:
        with wave.open(str(path), "rb") as reader:
            frames = reader.getnframes()
            expected = frames * reader.getnchannels() * reader.getsampwidth()
            found = len(reader.readframes(frames))
        if found != expected:
            raise CalibrationError(f"{path}: truncated wav ({found} of {expected} data bytes)")
        samples, file_rate = data_audio.read_wav(path)
    except CalibrationError:
        raise
    except (wave.Error, EOFError, OSError, ValueError, RuntimeError, struct.error) as error:  # wave's own
        raise CalibrationError(f"{path}: unreadable wav ({type(error).__name__}: {error}); "
                               f"PCM 8/16/24/32-bit is supported") from None
    if samples.size == 0:
        raise CalibrationError(f"{path}: no audio samples")
    return resample(samples, file_rate, rate)


def _shape(spec: InputSpec, batch: int = 1) -> tuple[int, ...]:
    return tuple(batch if d is None else d for d in (spec.dims or ()))


def _sequence_set(clips, specs, options, where):
    by_name = {spec.name: spec for spec in specs}
    width = by_name["input"].dims[1] if by_name["input"].dims else None
    if width not in (None, data_audio.CONTEXT_SAMPLES + data_audio.CHUNK_SAMPLES):
        raise CalibrationError(f"{where}: sequence input 'input' {by_name['input'].describe()} is not "
                               f"Silero's [T, 576] framing")
    chunk = min(SEQUENCE_CHUNK, max(1, options.samples // 4))  # >= 4 chunks to split
    chunks, groups = [], []
    for index, (_, samples) in enumerate(clips):
        rows = data_audio.sequence_input(samples)
        for start in range(0, len(rows), chunk):
            chunks.append(rows[start:start + chunk])
            groups.append(index)
    if not chunks:
        raise CalibrationError(f"{where}: no clip holds a whole {data_audio.CHUNK_SAMPLES}-sample frame")
    if len(chunks) == 1 and len(chunks[0]) >= 2:  # one short clip: two chunks, so there is a hold-out
        half = len(chunks[0]) // 2
        chunks, groups = [chunks[0][:half], chunks[0][half:]], [groups[0]] * 2
    keep, total = [], 0
    for index in np.random.default_rng([options.seed, 0]).permutation(len(chunks)):
        if total >= options.samples:
            break
        keep.append(int(index))
        total += len(chunks[index])
    keep.sort()
    h, c = (np.zeros(_shape(by_name[name]), np.float32) for name in ("h", "c"))
    feeds = [{"input": chunks[i], "h": h, "c": c} for i in keep]
    result, by_group = split_feeds(feeds, [groups[i] for i in keep], [len(chunks[i]) for i in keep],
                                   specs, options, where, sequential=True)
    return result, by_group, f"{total} frames in {len(feeds)} chunks"


def _state_output(session) -> int:
    """Index of the output named 'stateN', or -1 (then found by shape after the first run)."""
    names = [output.name for output in session.get_outputs()]
    return names.index("stateN") if "stateN" in names else -1


def stateful_rates(model: onnx.ModelProto, options: CalibrationOptions) -> tuple[int, ...]:
    """Sample rates a stateful Silero model is calibrated at: `sample_rate` when given, else 16 kHz,
    and 8 kHz too when the main graph branches (an `If`: silero_vad.onnx holds a network per rate,
    chosen by `sr`), so that every branch's weights are measured and checked."""
    if options.sample_rate:
        return (int(options.sample_rate),)
    if any(node.op_type == "If" for node in model.graph.node):
        return (SILERO_RATE, SILERO_RATE // 2)
    return (SILERO_RATE,)


def merge_sets(sets: list[CalibrationSet]) -> CalibrationSet:
    """One set holding the feeds, hold-out and streams of `sets` (e.g. one per sample rate)."""
    if len(sets) == 1:
        return sets[0]
    merged = CalibrationSet([], [], sets[0].description, sets[0].sequential)
    for part in sets:
        merged.optimise += part.optimise
        merged.holdout += part.holdout
        merged.optimise_counts += part.optimise_counts
        merged.holdout_counts += part.holdout_counts
        merged.holdout_streams += part.holdout_streams
        merged.optimise_streams += part.optimise_streams
        merged.holdout_groups = sorted(set(merged.holdout_groups) | set(part.holdout_groups))
    return merged


def _stateful_set(clips, model, specs, options, where, progress, rate: int = SILERO_RATE):
    from nnlc.fidelity import make_session

    by_name = {spec.name: spec for spec in specs}
    state_spec, input_spec = by_name["state"], by_name["input"]
    if state_spec.dims is None:
        raise CalibrationError(f"{where}: input 'state' has no shape; cannot make its initial value")
    axis = next((i for i, d in enumerate(state_spec.dims) if d is None), None)
    if axis is None:
        axis = next((i for i, d in enumerate(state_spec.dims) if d == 1), None)
        if axis is None:
            raise CalibrationError(f"{where}: input 'state' {state_spec.describe()} has no batch axis")
    try:
        chunk, _ = data_audio.silero_chunk(rate)
    except ValueError as error:
        raise CalibrationError(f"{where}: {error}") from None
    context = not (input_spec.dims and input_spec.dims[-1] == chunk)
    sr_shape = _shape(by_name["sr"])
    sr = np.full(sr_shape, rate, dtype=by_name["sr"].dtype)
    try:
        session = make_session(model)
    except Exception as error:
        raise CalibrationError(f"{where}: onnxruntime cannot run the original model "
                               f"({type(error).__name__}: {error})") from None
    state_index = _state_output(session)
    rows, states, groups, clip_frames = [], [], [], []
    for index, (_, samples) in enumerate(clips):
        state = np.zeros(_shape(state_spec), np.float32)
        clip_frames.append([])
        for frame in data_audio.stateful_frames(samples, context, rate):
            clip_frames[-1].append(frame)
            rows.append(frame[0])
            states.append(np.take(state, 0, axis=axis))
            groups.append(index)
            try:
                outputs = session.run(None, {"input": frame, "state": state, "sr": sr})
            except Exception as error:
                raise CalibrationError(f"{where}: the original model fails on a frame "
                                       f"({type(error).__name__}: {error})") from None
            if state_index < 0:
                state_index = next((i for i, out in enumerate(outputs) if np.shape(out) == state.shape
                                    and i > 0), -1)
                if state_index < 0:
                    raise CalibrationError(f"{where}: no model output has the shape of 'state' "
                                           f"{list(state.shape)} (expected one named 'stateN')")
            state = np.asarray(outputs[state_index], np.float32)
        report(progress, index + 1, len(clips), f"calibration clips at {rate} Hz (original model)")
    if not rows:
        raise CalibrationError(f"{where}: no clip holds a whole {chunk}-sample frame at {rate} Hz")
    keep = subsample(len(rows), options.samples, np.random.default_rng([options.seed, 0]))
    samples = Samples(len(keep), np.asarray(groups)[keep],
                      {"input": np.stack(rows)[keep], "state": np.stack(states)[keep]},
                      axes={"input": 0, "state": axis}, constants={"sr": sr})
    result, by_group = split_and_batch(samples, specs, options, where)
    held = result.holdout_groups if by_group else []
    def stream(group: int) -> Stream:
        return Stream(clip_frames[group], np.zeros(_shape(state_spec), np.float32), state_output=state_index,
                      constants={"sr": sr})

    result.holdout_streams = [stream(g) for g in held]
    used = sorted(set(int(g) for g in np.asarray(groups)[keep]) - set(held)) if held else []
    result.optimise_streams = [stream(g) for g in used]
    streams = f", hold-out checked free-running on {len(held)} whole clips" if held else ""
    return result, by_group, (f"{len(rows)} frames at {rate} Hz, {len(keep)} used, states from the original "
                              f"model{streams}")


def _generic_set(clips, specs, options, where):
    floats = [spec for spec in specs if spec.dtype.kind == "f"]
    if len(specs) != 1 or len(floats) != 1 or not floats[0].dims or floats[0].dims[-1] is None:
        raise CalibrationError(
            f"{where}: cannot frame audio for model inputs "
            + (", ".join(f"{s.name} {s.describe()}" for s in specs) or "(none)")
            + "; need one float input with a fixed last dim (the window length), or Silero's "
              "input/h/c or input/state/sr")
    spec = floats[0]
    rank, length = len(spec.dims), spec.dims[-1]
    if rank > 3 or (rank == 3 and spec.dims[1] not in (None, 1)):
        raise CalibrationError(f"{where}: audio input {spec.name!r} {spec.describe()} is not [L], [B, L] "
                               f"or [B, 1, L]")
    windows, groups = [], []
    for index, (_, samples) in enumerate(clips):
        count = max(1, len(samples) // length)
        padded = np.zeros(count * length, np.float32)
        padded[:min(len(samples), padded.size)] = samples[:padded.size]
        windows.append(padded.reshape(count, length))
        groups += [index] * count
    windows = np.concatenate(windows)
    keep = subsample(len(windows), options.samples, np.random.default_rng([options.seed, 0]))
    rows = windows[keep] if rank < 3 else windows[keep][:, None, :]
    samples = Samples(len(keep), np.asarray(groups)[keep], {spec.name: rows}, unbatched=rank == 1)
    result, by_group = split_and_batch(samples, specs, options, where)
    return result, by_group, f"{len(windows)} windows of {length}, {len(keep)} used"


def calibration_from_clips(clips: list[tuple[str, np.ndarray]], model: onnx.ModelProto,
                           options: CalibrationOptions, where: str,
                           progress: Progress | None = None) -> tuple[CalibrationSet, str]:
    """The set for (name, samples at the target rate) clips, and what it holds ('320 frames ...')."""
    specs = input_specs(model)
    rate = options.sample_rate or SILERO_RATE
    if is_sequence_model(specs) and rate != SILERO_RATE:
        raise CalibrationError(f"{where}: the Silero sequence model runs at {SILERO_RATE} Hz only, not {rate}")
    if is_sequence_model(specs):
        result, by_group, what = _sequence_set(clips, specs, options, where)
    elif is_stateful_model(specs):
        parts, notes = [], []
        for stream_rate in stateful_rates(model, options):
            resampled = clips if stream_rate == rate else \
                [(name, resample(samples, rate, stream_rate)) for name, samples in clips]
            part, by_group, what = _stateful_set(resampled, model, specs, options, where, progress, stream_rate)
            parts.append(part)
            notes.append(what)
        result, what = merge_sets(parts), "; ".join(notes)
    else:
        result, by_group, what = _generic_set(clips, specs, options, where)
    return result, f"{what} {split_note(result, by_group, 'clip')}"


def load_wav_folder(directory: Path, model: onnx.ModelProto, options: CalibrationOptions,
                    progress: Progress | None = None) -> CalibrationSet:
    """Frames of the wav files in `directory` (see the module docstring)."""
    files = wav_files(directory)
    if not files:
        raise CalibrationError(f"{directory}: no wav files")
    rate = options.sample_rate or SILERO_RATE
    clips = []
    for index, path in enumerate(files):
        clips.append((path.name, read_clip(path, rate)))
        report(progress, index + 1, len(files), "calibration wavs")
    result, what = calibration_from_clips(clips, model, options, str(directory), progress)
    result.description = f"wavs in {directory}: {len(files)} clips -> {what}"
    return result


def load_builtin_audio(model: onnx.ModelProto, options: CalibrationOptions,
                       progress: Progress | None = None) -> CalibrationSet:
    """Frames of the *train* clips of `nnlc.data.audio` (wav files if present, else synthetic)."""
    try:
        found = data_audio.vad_clips(split="train")
    except (OSError, ValueError, wave.Error, EOFError) as error:
        raise CalibrationError(f"built-in audio: {error}") from None
    rate = options.sample_rate or SILERO_RATE
    clips = [(clip.name, resample(clip.samples, data_audio.SAMPLE_RATE, rate)) for clip in found]
    result, what = calibration_from_clips(clips, model, options, "built-in audio", progress)
    result.description = f"built-in audio: {len(clips)} train clips -> {what}"
    return result
