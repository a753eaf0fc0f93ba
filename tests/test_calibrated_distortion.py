"""Hold-out fidelity of embeddings with a neighbour gallery (nnlc.calibrated.distortion.Reference)."""

from __future__ import annotations

import numpy as np
import pytest

from nnlc.calibrated.distortion import Reference

DIM = 24


def unit(*pairs: tuple[int, float]) -> np.ndarray:
    vector = np.zeros(DIM)
    for axis, value in pairs:
        vector[axis] = value
    return vector / np.linalg.norm(vector)


def references(with_gallery: bool) -> tuple[Reference, list, list]:
    queries = np.stack([unit((0, 1.0))] + [unit((axis, 1.0)) for axis in range(4, 13)])  # q0 and 9 far ones
    gallery = np.stack([unit((0, 1.0), (1, 0.10)), unit((0, 1.0), (2, 0.11))] +
                       [unit((axis, 1.0), (axis + 1, 0.3)) for axis in range(13, 21)])
    feeds_q, feeds_g = [{}], [{}]
    gallery_ref = Reference("embedding", feeds_g, [[gallery]]) if with_gallery else None
    return Reference("embedding", feeds_q, [[queries]], gallery=gallery_ref), [[queries]], [[gallery]]


def test_a_flip_among_the_gallery_fails_where_the_holdout_alone_passes():
    moved = references(False)[1][0][0].copy()
    moved[0] = unit((0, 1.0), (2, 0.05))  # now nearer the second gallery vector than the first
    alone, _, _ = references(False)
    metrics = alone.fidelity([[moved]])
    assert metrics["neighbour_agreement"] == 1.0 and metrics["transparent"]
    with_gallery, _, gallery = references(True)
    metrics = with_gallery.fidelity([[moved]], gallery)
    assert metrics["neighbour_agreement"] == pytest.approx(0.9) and not metrics["transparent"]
    assert metrics["neighbour_agreement_holdout_only"] == 1.0 and metrics["neighbour_gallery"] == 20
    assert metrics["mean_cosine"] > 0.999
    unchanged = with_gallery.fidelity(references(True)[1], gallery)
    assert unchanged["neighbour_agreement"] == 1.0 and unchanged["transparent"]


def test_gallery_needs_its_outputs_and_is_for_embeddings_only():
    with_gallery, outputs, _ = references(True)
    with pytest.raises(ValueError, match="gallery_outputs"):
        with_gallery.fidelity(outputs)
    with pytest.raises(ValueError, match="embeddings"):
        Reference("classifier", [{}], [[np.zeros((2, 3))]], gallery=with_gallery)
