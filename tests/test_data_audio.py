"""Audio for Silero VAD: wav reading, framing in both model formats, split by clip."""

import wave

import numpy as np
import pytest

from nnlc.data import audio


def _write_clips(directory, count, seconds=0.2):
    rng = np.random.default_rng(0)
    for index in range(count):
        samples = 0.3 * rng.standard_normal(int(seconds * audio.SAMPLE_RATE))
        audio.write_wav(directory / f"clip_{index:02d}.wav", np.clip(samples, -1, 1))


def test_wav_round_trip_is_exact_to_16_bits(tmp_path):
    samples = np.random.default_rng(1).uniform(-1, 1, 1000).astype(np.float32)
    audio.write_wav(tmp_path / "a.wav", samples)
    read, rate = audio.read_wav(tmp_path / "a.wav")
    assert rate == audio.SAMPLE_RATE and read.dtype == np.float32
    np.testing.assert_allclose(read, samples, atol=1.0 / 32768)


def test_stereo_wav_is_averaged_to_mono(tmp_path):
    left = np.full(100, 1000, np.int16)
    right = np.full(100, -3000, np.int16)
    with wave.open(str(tmp_path / "s.wav"), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(np.stack([left, right], axis=1).astype("<i2").tobytes())
    mono, _ = audio.read_wav(tmp_path / "s.wav")
    np.testing.assert_allclose(mono, -1000 / 32768, rtol=1e-6)


def test_sequence_rows_hold_64_context_samples_then_512_new_ones():
    samples = np.arange(3 * 512 + 100, dtype=np.float32)
    rows = audio.sequence_input(samples)
    assert rows.shape == (3, 576) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows[0, :64], 0.0)
    np.testing.assert_array_equal(rows[0, 64:], samples[:512])
    for t in (1, 2):
        np.testing.assert_array_equal(rows[t, :64], samples[t * 512 - 64:t * 512])
        np.testing.assert_array_equal(rows[t, 64:], samples[t * 512:(t + 1) * 512])


def test_stateful_frames_with_and_without_context():
    samples = np.random.default_rng(2).standard_normal(2048).astype(np.float32)
    with_context = audio.stateful_frames(samples)
    bare = audio.stateful_frames(samples, context=False)
    assert with_context.shape == (4, 1, 576) and bare.shape == (4, 1, 512)
    np.testing.assert_array_equal(bare[:, 0], samples.reshape(4, 512))
    np.testing.assert_array_equal(with_context[:, :, 64:], bare)


def test_model_state_inputs_have_the_manifest_shapes_and_types():
    h, c = audio.initial_lstm_state()
    assert h.shape == c.shape == (1, 1, 128) and h.dtype == np.float32
    assert audio.initial_state().shape == (2, 1, 128)
    rate = audio.sample_rate_input()
    assert rate.dtype == np.int64 and rate.ndim == 0 and int(rate) == 16000


def test_files_split_by_clip_into_disjoint_sets(tmp_path):
    _write_clips(tmp_path, 7)
    train = {clip.name for clip in audio.wav_clips("train", tmp_path)}
    heldout = {clip.name for clip in audio.wav_clips("heldout", tmp_path)}
    assert heldout == {"clip_02", "clip_05"}
    assert not train & heldout and len(train | heldout) == 7


def test_a_wav_at_another_rate_is_rejected(tmp_path):
    for index in range(3):
        audio.write_wav(tmp_path / f"c{index}.wav", np.zeros(600), rate=8000)
    with pytest.raises(ValueError, match="sample rate"):
        audio.wav_clips("heldout", tmp_path)


def test_synthetic_clips_are_seeded_and_split_apart():
    first = audio.synthetic_clips(4, seed=3, split="train")
    again = audio.synthetic_clips(4, seed=3, split="train")
    heldout = audio.synthetic_clips(4, seed=3, split="heldout")
    for a, b, c in zip(first, again, heldout, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples)
        assert not np.array_equal(a.samples, c.samples)
        assert a.samples.dtype == np.float32 and np.abs(a.samples).max() <= 0.5 + 1e-6


def test_auto_source_falls_back_to_synthetic_without_wavs(tmp_path):
    clips = audio.vad_clips("heldout", source="auto", audio_dir=tmp_path, n=2)
    assert [clip.name for clip in clips] == [c.name for c in audio.synthetic_clips(2)]
    _write_clips(tmp_path, 3)
    assert [c.name for c in audio.vad_clips("heldout", audio_dir=tmp_path)] == ["clip_02"]


def test_audio_dir_can_be_set_by_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(audio.AUDIO_DIR_ENV, str(tmp_path))
    assert audio.default_audio_dir() == tmp_path
