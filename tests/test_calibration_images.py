"""nnlc.calibration.images: crops of a folder of photos and of the bundled train photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import calibration_models
from nnlc.calibration import CalibrationError, CalibrationOptions, load_calibration
from nnlc.calibration import images as calibration_images
from nnlc.data.images import IMAGENET_MEAN, IMAGENET_STD

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (128, 64, 32)]


def _solid_photos(directory, count=len(COLOURS)):
    """Photo k is one solid colour, so each crop shows which photo it came from."""
    directory.mkdir(exist_ok=True)
    for index, colour in enumerate(COLOURS[:count]):
        suffix = ".PNG" if index % 2 else ".png"
        Image.new("RGB", (30 + 7 * index, 24 + 5 * index), colour).save(directory / f"photo{index}{suffix}")
    return directory


def _noisy_photos(directory, count=5):
    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (40 + 3 * index, 50, 3), dtype=np.uint8)
        if index == 1:
            Image.fromarray(pixels[:, :, 0], "L").save(directory / "grey.png")
        elif index == 2:
            Image.fromarray(np.dstack([pixels, pixels[:, :, :1]]), "RGBA").save(directory / "alpha.png")
        elif index == 3:
            Image.fromarray(pixels).save(directory / "photo.JPG", quality=90)
        else:
            Image.fromarray(pixels).save(directory / f"photo{index}.jpeg")
    return directory


def _source_of(crop_chw):
    """Index of the solid colour a normalised NCHW crop shows."""
    pixel = crop_chw[:, 0, 0] * IMAGENET_STD + IMAGENET_MEAN
    return int(np.argmin([np.abs(pixel - np.array(c) / 255.0).sum() for c in COLOURS]))


def _all(calibration):
    return calibration.optimise + calibration.holdout


def test_crops_are_normalised_nchw_and_split_by_photo(tmp_path):
    folder = _solid_photos(tmp_path / "photos")
    model = calibration_models.image_model()
    seen = []
    calibration = load_calibration(str(folder), model, CalibrationOptions(samples=24),
                                   progress=lambda done, total, label: seen.append((done, total)))
    assert calibration.n_optimise + calibration.n_holdout == 24
    assert "6 photos -> 24 crops" in calibration.description and "split by photo" in calibration.description
    for feed in _all(calibration):
        assert feed["image"].dtype == np.float32 and feed["image"].shape[1:] == (3, 16, 16)
        assert feed["image"].shape[0] <= 8
    optimise_sources = {_source_of(crop) for feed in calibration.optimise for crop in feed["image"]}
    holdout_sources = {_source_of(crop) for feed in calibration.holdout for crop in feed["image"]}
    assert optimise_sources and holdout_sources and not optimise_sources & holdout_sources
    crop = calibration.optimise[0]["image"][0]
    expected = (np.array(COLOURS[_source_of(crop)]) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(crop[:, 5, 7], expected, atol=1e-5)
    assert seen[-1] == (6, 6)
    calibration_models.run_all(model, _all(calibration))


def test_crops_are_deterministic_and_vary_with_seed(tmp_path):
    folder = _noisy_photos(tmp_path / "photos")
    model = calibration_models.image_model()
    first, second = (load_calibration(str(folder), model, CalibrationOptions(samples=20)) for _ in range(2))
    for a, b in zip(_all(first), _all(second), strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    other = load_calibration(str(folder), model, CalibrationOptions(samples=20, seed=1))
    assert not np.array_equal(other.optimise[0]["image"], first.optimise[0]["image"])


def test_nhwc_layout_grey_input_and_custom_normalisation(tmp_path):
    folder = _noisy_photos(tmp_path / "photos")
    nhwc = load_calibration(str(folder), calibration_models.image_model((None, 16, 16, 3)),
                            CalibrationOptions(samples=10, image_mean=(0, 0, 0), image_std=(1, 1, 1)))
    values = np.concatenate([feed["image"] for feed in _all(nhwc)])
    assert values.shape == (10, 16, 16, 3) and 0.0 <= values.min() and values.max() <= 1.0
    grey = load_calibration(str(folder), calibration_models.image_model((None, 1, 12, 12)),
                            CalibrationOptions(samples=10))
    assert all(feed["image"].shape[1:] == (1, 12, 12) for feed in _all(grey))


def test_image_size_for_dynamic_dims_and_fixed_batch(tmp_path):
    folder = _noisy_photos(tmp_path / "photos")
    dynamic = load_calibration(str(folder), calibration_models.image_model((None, 3, None, None)),
                               CalibrationOptions(samples=6, image_size=20))
    assert all(feed["image"].shape[1:] == (3, 20, 20) for feed in _all(dynamic))
    fixed = load_calibration(str(folder), calibration_models.image_model((2, 3, 8, 8)),
                             CalibrationOptions(samples=7))
    assert all(feed["image"].shape == (2, 3, 8, 8) for feed in _all(fixed))


def test_few_photos_make_many_crops_split_by_crop(tmp_path):
    folder = _solid_photos(tmp_path / "photos", count=2)
    calibration = load_calibration(str(folder), calibration_models.image_model(), CalibrationOptions(samples=16))
    assert calibration.n_optimise == 12 and calibration.n_holdout == 4
    assert "split by photo" not in calibration.description


def test_more_photos_than_samples_uses_a_subset(tmp_path):
    folder = _solid_photos(tmp_path / "photos")
    calibration = load_calibration(str(folder), calibration_models.image_model(), CalibrationOptions(samples=4))
    assert calibration.n_optimise + calibration.n_holdout == 4 and "4 used" in calibration.description


def test_truncated_image_is_named(tmp_path):
    folder = _solid_photos(tmp_path / "photos", count=4)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "broken.png")
    data = (folder / "broken.png").read_bytes()
    (folder / "broken.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(CalibrationError, match="broken.png: unreadable image"):
        load_calibration(str(folder), calibration_models.image_model(), CalibrationOptions(samples=8))


def test_not_an_image_is_named(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "fake.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(CalibrationError, match="fake.jpg: unreadable image"):
        load_calibration(str(folder), calibration_models.image_model())


def test_pixel_cap_is_checked_before_decoding(tmp_path, monkeypatch):
    folder = _solid_photos(tmp_path / "photos", count=2)
    monkeypatch.setattr(calibration_images, "MAX_PIXELS", 800)
    with pytest.raises(CalibrationError, match=r"photo1.PNG: 37x29 image is above the cap of 800 pixels"):
        load_calibration(str(folder), calibration_models.image_model())


@pytest.mark.parametrize("model, options, words", [
    (calibration_models.float_model(), CalibrationOptions(), "one float rank-4 input"),
    (calibration_models.image_model((None, 4, 16, 16)), CalibrationOptions(), "4 channels"),
    (calibration_models.image_model(), CalibrationOptions(image_size=32), "image_size 32 does not fit"),
    (calibration_models.image_model(), CalibrationOptions(image_mean=(0.5,)), "image_mean has 1 values"),
    (calibration_models.image_model(), CalibrationOptions(image_std=(1, 0, 1)), "image_std must be positive"),
])
def test_models_and_options_images_cannot_fill(tmp_path, model, options, words):
    folder = _solid_photos(tmp_path / "photos", count=2)
    with pytest.raises(CalibrationError, match=words):
        load_calibration(str(folder), model, options)


def test_extra_model_input_is_left_without_data(tmp_path):
    folder = _solid_photos(tmp_path / "photos", count=2)
    model = calibration_models.image_model()
    model.graph.input.extend(calibration_models.float_model().graph.input)
    with pytest.raises(CalibrationError, match="'x' is left without data"):
        load_calibration(str(folder), model)


def test_builtin_images_use_the_train_photos():
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    calibration = load_calibration("images", calibration_models.image_model(), CalibrationOptions(samples=16))
    assert calibration.n_optimise + calibration.n_holdout == 16
    assert "train photos" in calibration.description and "split by photo" in calibration.description
    assert all(feed["image"].shape[1:] == (3, 16, 16) for feed in _all(calibration))
