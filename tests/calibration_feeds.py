"""Feed generators for the `package.module:function` calibration source (tests/test_calibration_arrays.py).

Each yields feeds for the model `float_model()` of the tests: one float32 input `x` [batch, 4].
"""

from __future__ import annotations

import itertools

import numpy as np


def feeds():
    """Endless seeded feeds of 3 samples each, in float64 (cast safely to float32)."""
    rng = np.random.default_rng(0)
    for _ in itertools.count():
        yield {"x": rng.standard_normal((3, 4))}


def five_feeds():
    """Exactly five feeds of 2 samples."""
    return [{"x": np.full((2, 4), index, np.float32)} for index in range(5)]


def integer_feeds():
    """Feeds of the wrong kind (int64 for a float input)."""
    yield {"x": np.ones((2, 4), np.int64)}


def wrong_name_feeds():
    yield {"y": np.ones((2, 4), np.float32)}


def failing_feeds():
    yield {"x": np.ones((2, 4), np.float32)}
    raise RuntimeError("the data loader broke")


def not_a_dict():
    yield [np.ones((2, 4), np.float32)]


NOT_CALLABLE = 3

UNPICKLED: list[str] = []


def mark(note: str) -> str:
    """Called only if a pickle made by the tests is ever loaded."""
    UNPICKLED.append(note)
    return note
