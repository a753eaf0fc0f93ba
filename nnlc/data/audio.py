"""16 kHz audio framed for Silero VAD, from wav clips or seeded synthetic signals.

Two model formats (../shared/models/MANIFEST.md):
- `silero_vad_16k_sequence.onnx`: one call per clip, `input` [T, 576] where row t is the 64 samples
  before chunk t (zeros for t = 0) followed by the 512 samples of chunk t; `h`, `c` [1, 1, 128]
  zeros.
- `silero_vad.onnx`: one call per chunk, feeding `stateN` back as `state` [2, 1, 128], `sr` int64
  16000. Measured on the shipped file: its `input` must carry the same 64 context samples, i.e. be
  [1, 576] (what silero-vad's own `OnnxWrapper` feeds); with those rows its output equals the
  sequence model's bit for bit, while bare [1, 512] chunks give probabilities off by up to 0.999.
  `stateful_frames(..., context=False)` gives the bare chunks all the same.

Train / held-out split is by clip: of the sorted wav files, every third (indices 2, 5, 8, ...) is
held out. Synthetic clips are split by random stream: clip i of a split comes from
`np.random.default_rng([seed, split_index, i])`, so the two splits never share a clip.
Only the stdlib `wave` module is used to read files (PCM 8/16/24/32-bit, any channel count).
"""

from __future__ import annotations

import dataclasses
import os
import wave
from pathlib import Path

import numpy as np

from nnlc.data import check_split

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 512
CONTEXT_SAMPLES = 64
STATE_SHAPE = (2, 1, 128)
LSTM_STATE_SHAPE = (1, 1, 128)
HELDOUT_EVERY = 3
AUDIO_DIR_ENV = "NNLC_AUDIO_DIR"


@dataclasses.dataclass(frozen=True)
class AudioClip:
    """A mono clip: float32 samples in [-1, 1] at `SAMPLE_RATE`."""

    name: str
    samples: np.ndarray


def default_audio_dir() -> Path:
    """$NNLC_AUDIO_DIR if set, else ../shared/data/audio next to the repository root."""
    if os.environ.get(AUDIO_DIR_ENV):
        return Path(os.environ[AUDIO_DIR_ENV])
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "audio"


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Reads a PCM wav file as mono float32 in [-1, 1] (channels averaged) and its sample rate."""
    with wave.open(str(path), "rb") as reader:
        channels, width = reader.getnchannels(), reader.getsampwidth()
        rate, raw = reader.getframerate(), reader.readframes(reader.getnframes())
    if width == 1:
        values = np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0
    elif width == 3:
        bytes_ = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = (bytes_[:, 0] | (bytes_[:, 1] << 8) | (bytes_[:, 2] << 16)).astype(np.int32)
        values = np.where(values >= 1 << 23, values - (1 << 24), values).astype(np.float32)
    elif width in (2, 4):
        values = np.frombuffer(raw, dtype=f"<i{width}").astype(np.float32)
    else:
        raise ValueError(f"{path}: unsupported sample width {width}")
    full_scale = float(2 ** (8 * width - 1))
    samples = values.reshape(-1, channels).mean(axis=1) / full_scale
    return samples.astype(np.float32), rate


def write_wav(path: str | os.PathLike, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Writes mono float samples in [-1, 1] as 16-bit PCM."""
    pcm = np.clip(np.round(np.asarray(samples) * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm.tobytes())


def wav_paths(audio_dir: str | os.PathLike | None = None) -> list[Path]:
    """Sorted .wav files in `audio_dir` (default `default_audio_dir()`)."""
    directory = Path(audio_dir) if audio_dir is not None else default_audio_dir()
    if not directory.is_dir():
        raise FileNotFoundError(f"audio directory not found: {directory}")
    return sorted(directory.glob("*.wav"))


def split_paths(paths: list[Path], split: str) -> list[Path]:
    """Clips of `split`: of the sorted paths, indices 2, 5, 8, ... are held out."""
    heldout = check_split(split) == "heldout"
    chosen = [path for index, path in enumerate(sorted(paths))
              if (index % HELDOUT_EVERY == HELDOUT_EVERY - 1) == heldout]
    if not chosen:
        raise ValueError(f"{len(paths)} clips leave split {split!r} empty")
    return chosen


def wav_clips(split: str = "heldout",
              audio_dir: str | os.PathLike | None = None) -> list[AudioClip]:
    """The wav clips of `split`, checked to be 16 kHz."""
    clips = []
    for path in split_paths(wav_paths(audio_dir), split):
        samples, rate = read_wav(path)
        if rate != SAMPLE_RATE:
            raise ValueError(f"{path}: sample rate {rate}, expected {SAMPLE_RATE}")
        clips.append(AudioClip(path.stem, samples))
    return clips


def tones_and_noise_bursts(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Steady tones under a noise floor, with short loud noise bursts (non-speech)."""
    time = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    signal = 0.01 * rng.standard_normal(time.size)
    for _ in range(rng.integers(1, 4)):
        frequency = rng.uniform(200.0, 4000.0)
        phase = rng.uniform(0, 2 * np.pi)
        signal += rng.uniform(0.02, 0.2) * np.sin(2 * np.pi * frequency * time + phase)
    for _ in range(rng.integers(2, 6)):
        start = int(rng.integers(0, time.size))
        length = int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
        burst = rng.uniform(0.1, 0.5) * rng.standard_normal(min(length, time.size - start))
        signal[start:start + burst.size] += burst
    return signal


def speech_like(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Voiced harmonics with pitch glides, formant-shaped spectrum and syllabic (3-6 Hz) AM."""
    time = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = rng.uniform(90.0, 240.0) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * time))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    formants = rng.uniform([400.0, 1000.0, 2200.0], [900.0, 1800.0, 3200.0])
    voiced = np.zeros_like(time)
    for harmonic in range(1, 30):
        frequency = harmonic * pitch.mean()
        gain = sum(np.exp(-((frequency - f) / 250.0) ** 2) for f in formants) + 0.05
        voiced += gain / harmonic * np.sin(harmonic * phase)
    syllable_rate, syllable_phase = rng.uniform(3.0, 6.0), rng.uniform(0, 2 * np.pi)
    syllables = np.clip(np.sin(2 * np.pi * syllable_rate * time + syllable_phase), 0, 1)
    signal = voiced * syllables ** 2 + 0.01 * rng.standard_normal(time.size)
    return signal


def synthetic_clips(n: int = 4, seed: int = 0, split: str = "heldout",
                    seconds: float = 2.0) -> list[AudioClip]:
    """`n` seeded clips alternating speech-like and tones+bursts, peak-normalised to 0.5."""
    split_index = 0 if check_split(split) == "train" else 1
    clips = []
    for index in range(n):
        rng = np.random.default_rng([seed, split_index, index])
        make = speech_like if index % 2 == 0 else tones_and_noise_bursts
        signal = make(rng, seconds)
        signal = 0.5 * signal / max(float(np.abs(signal).max()), 1e-9)
        clips.append(AudioClip(f"{split}_{make.__name__}_{index}", signal.astype(np.float32)))
    return clips


def vad_clips(split: str = "heldout", source: str = "auto",
              audio_dir: str | os.PathLike | None = None, n: int | None = None,
              seed: int = 0) -> list[AudioClip]:
    """Clips of `split` from 'files', 'synthetic', or 'auto' (files if the directory exists).

    `n` caps the number of clips (synthetic default: 4).
    """
    if source == "auto":
        directory = Path(audio_dir) if audio_dir is not None else default_audio_dir()
        source = "files" if directory.is_dir() and any(directory.glob("*.wav")) else "synthetic"
    if source == "files":
        return wav_clips(split, audio_dir)[:n]
    if source == "synthetic":
        return synthetic_clips(4 if n is None else n, seed, split)
    raise ValueError(f"source must be 'auto', 'files' or 'synthetic', got {source!r}")


def chunk_count(samples: np.ndarray) -> int:
    """Number of whole 512-sample chunks (a trailing partial chunk is dropped)."""
    return len(samples) // CHUNK_SAMPLES


def _framed(samples: np.ndarray, chunk: int, context: int) -> np.ndarray:
    """[T, context + chunk] rows: each whole chunk after the `context` samples before it (zeros first)."""
    count = len(samples) // chunk
    padded = np.concatenate([np.zeros(context, np.float32), np.asarray(samples, np.float32)[:count * chunk]])
    starts = np.arange(count) * chunk
    return padded[starts[:, None] + np.arange(context + chunk)[None, :]]


def sequence_input(samples: np.ndarray) -> np.ndarray:
    """Input of `silero_vad_16k_sequence`: float32 [T, 576], 64 context samples + 512 new."""
    return _framed(samples, CHUNK_SAMPLES, CONTEXT_SAMPLES)


def silero_chunk(rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """(new samples, context samples) of one `silero_vad` call at `rate`: 512 + 64 at 16 kHz,
    256 + 32 at 8 kHz (the two rates the model has branches for)."""
    if rate == SAMPLE_RATE:
        return CHUNK_SAMPLES, CONTEXT_SAMPLES
    if rate == SAMPLE_RATE // 2:
        return CHUNK_SAMPLES // 2, CONTEXT_SAMPLES // 2
    raise ValueError(f"silero_vad runs at 16000 or 8000 Hz, not {rate}")


def stateful_frames(samples: np.ndarray, context: bool = True, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per-call inputs of `silero_vad` at `rate`: [T, 1, 576] at 16 kHz (with context, as the model
    needs; [T, 1, 288] at 8 kHz) or the bare chunks [T, 1, 512] ([T, 1, 256])."""
    chunk, context_samples = silero_chunk(rate)
    rows = _framed(samples, chunk, context_samples)
    return rows[:, None, :] if context else rows[:, None, context_samples:]


def initial_lstm_state() -> tuple[np.ndarray, np.ndarray]:
    """Zero `h`, `c` for `silero_vad_16k_sequence`."""
    return np.zeros(LSTM_STATE_SHAPE, np.float32), np.zeros(LSTM_STATE_SHAPE, np.float32)


def initial_state(batch: int = 1) -> np.ndarray:
    """Zero `state` [2, batch, 128] for `silero_vad`."""
    return np.zeros((STATE_SHAPE[0], batch, STATE_SHAPE[2]), np.float32)


def sample_rate_input(rate: int = SAMPLE_RATE) -> np.ndarray:
    """The `sr` input of `silero_vad`: an int64 scalar."""
    return np.array(rate, dtype=np.int64)
