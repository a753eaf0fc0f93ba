"""nnlc.calibration.audio: wav folders and built-in clips framed for sequence, stateful and plain models."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

import calibration_models
from nnlc.calibration import CalibrationError, CalibrationOptions, load_calibration
from nnlc.calibration.audio import resample
from nnlc.data import audio as data_audio


def _clips(directory, count=5, rate=16000):
    """`count` noise clips of 5-9 Silero frames (each row of the framing is unique)."""
    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    clips = {}
    for index in range(count):
        samples = 0.3 * rng.standard_normal(int((5 + index) * 512 * rate / 16000 + 100))
        data_audio.write_wav(directory / f"clip{index}.wav", samples, rate)
        clips[f"clip{index}.wav"] = data_audio.read_wav(directory / f"clip{index}.wav")[0]
    return directory, clips


def _rows(feeds, name="input"):
    return {row.tobytes() for feed in feeds for row in feed[name]}


def test_sequence_model_feeds_are_chunks_of_one_clip(tmp_path):
    folder, clips = _clips(tmp_path / "wavs")
    model = calibration_models.sequence_model()
    calibration = load_calibration(str(folder), model, CalibrationOptions(samples=32))
    assert calibration.sequential and "split by clip" in calibration.description
    total_frames = sum(data_audio.chunk_count(samples) for samples in clips.values())
    assert 32 <= calibration.n_optimise + calibration.n_holdout <= total_frames  # whole chunks
    framed = {name: data_audio.sequence_input(samples) for name, samples in clips.items()}
    clip_of_row = {row.tobytes(): name for name, rows in framed.items() for row in rows}
    for feed in calibration.optimise + calibration.holdout:
        assert feed["input"].dtype == np.float32 and feed["input"].shape[1] == 576
        assert feed["input"].shape[0] <= 8  # samples // 4 frames per chunk
        assert not feed["h"].any() and not feed["c"].any() and feed["h"].shape == (1, 1, 4)
        names = {clip_of_row[row.tobytes()] for row in feed["input"]}
        assert len(names) == 1
        rows = framed[names.pop()]
        start = next(i for i in range(len(rows)) if np.array_equal(rows[i], feed["input"][0]))
        np.testing.assert_array_equal(rows[start:start + len(feed["input"])], feed["input"])
    optimise_clips = {clip_of_row[r] for r in _rows(calibration.optimise)}
    holdout_clips = {clip_of_row[r] for r in _rows(calibration.holdout)}
    assert holdout_clips and not optimise_clips & holdout_clips
    calibration_models.run_all(model, calibration.optimise)


def test_sequence_model_is_deterministic(tmp_path):
    folder, _ = _clips(tmp_path / "wavs")
    model = calibration_models.sequence_model()
    first, second = (load_calibration(str(folder), model, CalibrationOptions(samples=32)) for _ in range(2))
    for a, b in zip(first.optimise + first.holdout, second.optimise + second.holdout, strict=True):
        np.testing.assert_array_equal(a["input"], b["input"])


def test_stateful_model_states_come_from_the_original(tmp_path):
    folder, clips = _clips(tmp_path / "wavs")
    model = calibration_models.stateful_model()
    calibration = load_calibration(str(folder), model, CalibrationOptions(samples=24, batch_size=4))
    assert not calibration.sequential and calibration.n_optimise + calibration.n_holdout == 24
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    state_before = {}
    for samples in clips.values():
        state = np.zeros((2, 1, 4), np.float32)
        for frame in data_audio.stateful_frames(samples):
            state_before[frame[0].tobytes()] = state[:, 0]
            state = session.run(None, {"input": frame, "state": state, "sr": np.array(16000)})[1]
    for feed in calibration.optimise + calibration.holdout:
        assert feed["input"].shape[1] == 576 and feed["state"].shape == (2, len(feed["input"]), 4)
        assert feed["sr"].dtype == np.int64 and int(feed["sr"]) == 16000
        for row, frame in enumerate(feed["input"]):
            np.testing.assert_allclose(feed["state"][:, row], state_before[frame.tobytes()], atol=1e-6)
    assert any(np.abs(feed["state"]).max() > 0 for feed in calibration.optimise)
    assert not _rows(calibration.optimise) & _rows(calibration.holdout)
    calibration_models.run_all(model, calibration.optimise + calibration.holdout)


def test_model_with_a_branch_per_rate_is_calibrated_at_16_and_8_khz(tmp_path):
    folder, clips = _clips(tmp_path / "wavs")
    model = calibration_models.branched_stateful_model()
    calibration = load_calibration(str(folder), model, CalibrationOptions(samples=24, batch_size=4))
    assert "at 16000 Hz" in calibration.description and "at 8000 Hz" in calibration.description
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    widths = {16000: 576, 8000: 288}
    for feed in calibration.optimise + calibration.holdout:
        rate = int(feed["sr"])
        assert feed["input"].shape[1] == widths[rate]
        output = session.run(None, {"input": feed["input"], "state": feed["state"], "sr": feed["sr"]})[0]
        assert np.all(output > (1.0 if rate == 16000 else 2.0) - 1)  # the rate's own branch ran
    rates = lambda streams: sorted(int(s.constants["sr"]) for s in streams)  # noqa: E731
    assert rates(calibration.holdout_streams).count(8000) == rates(calibration.holdout_streams).count(16000) >= 1
    assert 8000 in rates(calibration.optimise_streams) and 16000 in rates(calibration.optimise_streams)
    for stream in calibration.holdout_streams:
        assert all(frame.shape == (1, widths[int(stream.constants["sr"])]) for frame in stream.frames)
    eight = [s for s in calibration.holdout_streams if int(s.constants["sr"]) == 8000]
    sixteen = [s for s in calibration.holdout_streams if int(s.constants["sr"]) == 16000]
    assert [len(s.frames) for s in eight] == [len(s.frames) for s in sixteen]  # the same clips, resampled
    only = load_calibration(str(folder), model, CalibrationOptions(samples=24, batch_size=4, sample_rate=8000))
    assert {int(feed["sr"]) for feed in only.optimise + only.holdout} == {8000}


@pytest.mark.parametrize("dims", [(None, 400), (400,), (None, 1, 400)])
def test_plain_model_gets_fixed_windows(tmp_path, dims):
    folder, _ = _clips(tmp_path / "wavs", count=4)
    model = calibration_models.float_model(dims)
    calibration = load_calibration(str(folder), model, CalibrationOptions(samples=20))
    assert calibration.n_optimise + calibration.n_holdout == 20 and "split by clip" in calibration.description
    for feed in calibration.optimise + calibration.holdout:
        shape = feed["x"].shape
        assert shape[-1] == 400 and len(shape) == len(dims)
    calibration_models.run_all(model, calibration.optimise)


def test_other_sample_rates_are_resampled(tmp_path):
    folder, _ = _clips(tmp_path / "wavs", count=2, rate=8000)
    calibration = load_calibration(str(folder), calibration_models.float_model((None, 400)),
                                   CalibrationOptions(samples=100))
    expected = sum((int((5 + i) * 512 * 8000 / 16000 + 100) * 2) // 400 for i in range(2))
    assert calibration.n_optimise + calibration.n_holdout == expected
    time = np.arange(800) / 8000
    upsampled = resample(np.sin(2 * np.pi * 250 * time).astype(np.float32), 8000, 16000)
    reference = np.sin(2 * np.pi * 250 * np.arange(1600) / 16000)
    assert upsampled.shape == (1600,) and np.abs(upsampled - reference).max() < 1e-3


def test_truncated_and_garbage_wavs_are_named(tmp_path):
    folder, _ = _clips(tmp_path / "wavs", count=2)
    data = (folder / "clip1.wav").read_bytes()
    (folder / "clip1.wav").write_bytes(data[:len(data) - 1001])
    with pytest.raises(CalibrationError, match="clip1.wav: truncated wav"):
        load_calibration(str(folder), calibration_models.sequence_model())
    (folder / "clip1.wav").write_bytes(b"RIFF0000WAVEjunk" * 4)
    with pytest.raises(CalibrationError, match="clip1.wav: unreadable wav"):
        load_calibration(str(folder), calibration_models.sequence_model())


def test_too_short_audio_and_unsuitable_models(tmp_path):
    folder = tmp_path / "short"
    folder.mkdir()
    data_audio.write_wav(folder / "tiny.wav", np.zeros(100))
    with pytest.raises(CalibrationError, match="no clip holds a whole 512-sample frame"):
        load_calibration(str(folder), calibration_models.sequence_model())
    with pytest.raises(CalibrationError, match="at least 2"):
        load_calibration(str(folder), calibration_models.float_model((None, 400)))
    with pytest.raises(CalibrationError, match="cannot frame audio for model inputs"):
        load_calibration(str(folder), calibration_models.text_model())
    with pytest.raises(CalibrationError, match="16000 Hz only"):
        load_calibration(str(folder), calibration_models.sequence_model(), CalibrationOptions(sample_rate=8000))
    with pytest.raises(CalibrationError, match="16000 or 8000 Hz, not 22050"):
        load_calibration(str(folder), calibration_models.stateful_model(), CalibrationOptions(sample_rate=22050))
    data_audio.write_wav(folder / "empty.wav", np.zeros(0))
    with pytest.raises(CalibrationError, match="empty.wav: no audio samples"):
        load_calibration(str(folder), calibration_models.sequence_model())


def test_builtin_audio_uses_train_clips(tmp_path, monkeypatch):
    monkeypatch.setenv(data_audio.AUDIO_DIR_ENV, str(tmp_path))  # no wavs there: synthetic clips
    calibration = load_calibration("audio", calibration_models.sequence_model(), CalibrationOptions(samples=32))
    assert calibration.sequential and "built-in audio: 4 train clips" in calibration.description
    heldout = {row.tobytes() for clip in data_audio.synthetic_clips(split="heldout")
               for row in data_audio.sequence_input(clip.samples)}
    assert not _rows(calibration.optimise + calibration.holdout) & heldout
