"""Offline, seeded inputs for measuring the fidelity of reconstructed networks.

Everything here uses numpy and the standard library (plus scikit-image, scikit-learn and
matplotlib for their bundled photos); nothing imports JAX. See DESIGN.md section 6.

- `images`: 224x224 ImageNet-normalised crops of photos bundled with common packages.
- `audio`: 16 kHz clips (wav files or synthetic) framed for the two Silero VAD models.
- `text`: English sentences from `pydoc_data.topics` and a WordPiece tokenizer.
"""

SPLITS = ("train", "heldout")


def check_split(split: str) -> str:
    """Returns `split` if it names a known split, else raises ValueError."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split
