"""Seeded image crops: determinism, normalisation, disjoint splits, resizing."""

import warnings

import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from nnlc.data import images  # noqa: E402


def test_crops_are_deterministic_for_a_seed_and_differ_across_seeds():
    first = images.image_crops(3, seed=7, split="train")
    again = images.image_crops(3, seed=7, split="train")
    other = images.image_crops(3, seed=8, split="train")
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_crops_are_float32_nchw_and_imagenet_normalised():
    crops = images.image_crops(4, seed=0, split="heldout")
    assert crops.shape == (4, 3, 224, 224) and crops.dtype == np.float32
    lowest = (0.0 - images.IMAGENET_MEAN) / images.IMAGENET_STD
    highest = (1.0 - images.IMAGENET_MEAN) / images.IMAGENET_STD
    per_channel = crops.transpose(1, 0, 2, 3).reshape(3, -1)
    assert np.all(per_channel.min(axis=1) >= lowest - 1e-5)
    assert np.all(per_channel.max(axis=1) <= highest + 1e-5)


def test_train_and_heldout_draw_from_disjoint_photos():
    assert not set(images.TRAIN_SOURCES) & set(images.HELDOUT_SOURCES)
    train_sources = {box.source for box in images.crop_boxes(40, seed=0, split="train")}
    heldout_sources = {box.source for box in images.crop_boxes(40, seed=0, split="heldout")}
    assert train_sources <= set(images.TRAIN_SOURCES)
    assert heldout_sources <= set(images.HELDOUT_SOURCES)


def test_boxes_lie_inside_their_source_images():
    for split in ("train", "heldout"):
        for box in images.crop_boxes(30, seed=1, split=split):
            height, width = images.load_source_image(box.source).shape[:2]
            assert 0 <= box.top and box.top + box.height <= height
            assert 0 <= box.left and box.left + box.width <= width
            assert box.height * box.width >= 0.09 * height * width


def test_batches_match_the_whole_set():
    whole = images.image_crops(5, seed=2, split="heldout")
    batched = np.concatenate(list(images.image_crop_batches(5, seed=2, split="heldout",
                                                           batch_size=2)))
    np.testing.assert_array_equal(whole, batched)


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError):
        images.crop_boxes(1, split="validation")


def test_resize_keeps_constants_and_same_size_images():
    constant = np.full((500, 300, 3), 77.0, np.float32)
    np.testing.assert_allclose(images.resize_bilinear(constant, 224, 224), 77.0, rtol=1e-6)
    image = np.random.default_rng(0).uniform(0, 255, (20, 30, 3)).astype(np.float32)
    np.testing.assert_allclose(images.resize_bilinear(image, 20, 30), image, rtol=1e-6)


def test_resize_of_a_ramp_stays_a_ramp():
    ramp = np.tile(np.arange(448, dtype=np.float32)[None, :, None], (10, 1, 3))
    resized = images.resize_bilinear(ramp, 5, 224)
    assert resized.shape == (5, 224, 3)
    np.testing.assert_allclose(np.diff(resized[0, :, 0]), 2.0, atol=1e-4)


def test_grey_images_are_replicated_to_rgb():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = images.to_rgb_uint8(grey)
    assert rgb.shape == (3, 4, 3)
    assert all(np.array_equal(rgb[:, :, channel], grey) for channel in range(3))
    assert images.to_rgb_uint8(np.ones((2, 2, 4), np.float64)).max() == 255


def test_a_photo_that_fails_to_load_is_skipped(monkeypatch):
    real_loader = images._loader

    def failing_loader(name):
        if name == "grass":
            def fail():
                raise OSError("would need a download")
            return fail
        return real_loader(name)

    images.load_source_image.cache_clear()
    monkeypatch.setattr(images, "_loader", failing_loader)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            available = images.available_sources("heldout")
        assert "grass" not in available and len(available) == len(images.HELDOUT_SOURCES) - 1
        assert any("grass" in str(warning.message) for warning in caught)
    finally:
        images.load_source_image.cache_clear()
