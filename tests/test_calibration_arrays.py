"""nnlc.calibration.arrays: npz files, `module:function` callables and Gaussian noise."""

from __future__ import annotations

import numpy as np
import pytest

import calibration_feeds
import calibration_models
from nnlc.calibration import CalibrationError, CalibrationOptions, load_calibration


def _rows(feeds, name):
    return {row.tobytes() for feed in feeds for row in feed[name]}


def _write(tmp_path, name="calib.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def _two_input_arrays(count=20, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((count, 4)),  # float64: cast to float32
            "ids": rng.integers(0, 100, (count, 3)).astype(np.int32)}  # int32: cast to int64


def test_npz_samples_are_batched_split_and_cast(tmp_path):
    path = _write(tmp_path, **_two_input_arrays())
    model = calibration_models.two_input_model()
    calibration = load_calibration(path, model, CalibrationOptions(batch_size=4))
    assert calibration.n_optimise == 15 and calibration.n_holdout == 5
    for feed in calibration.optimise + calibration.holdout:
        assert feed["x"].dtype == np.float32 and feed["ids"].dtype == np.int64
        assert feed["x"].shape[1:] == (4,) and feed["x"].shape[0] == feed["ids"].shape[0] <= 4
    assert not _rows(calibration.optimise, "x") & _rows(calibration.holdout, "x")
    assert len(_rows(calibration.optimise, "x") | _rows(calibration.holdout, "x")) == 20
    assert not calibration.sequential
    calibration_models.run_all(model, calibration.optimise + calibration.holdout)


def test_npz_is_deterministic_and_seeded(tmp_path):
    path = _write(tmp_path, **_two_input_arrays())
    model = calibration_models.two_input_model()
    first, second = (load_calibration(path, model, CalibrationOptions(seed=3)) for _ in range(2))
    for a, b in zip(first.optimise + first.holdout, second.optimise + second.holdout, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    other = load_calibration(path, model, CalibrationOptions(seed=4))
    assert _rows(other.holdout, "x") != _rows(first.holdout, "x")


def test_npz_takes_at_most_samples(tmp_path):
    path = _write(tmp_path, **_two_input_arrays(40))
    calibration = load_calibration(path, calibration_models.two_input_model(), CalibrationOptions(samples=10))
    assert calibration.n_optimise + calibration.n_holdout == 10


def test_npz_fixed_batch_dim_gives_full_feeds(tmp_path):
    path = _write(tmp_path, x=np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32))
    calibration = load_calibration(path, calibration_models.float_model((2, 4)))
    assert all(feed["x"].shape == (2, 4) for feed in calibration.optimise + calibration.holdout)
    assert calibration.n_optimise + calibration.n_holdout == 7


def test_npz_stacked_feeds_with_a_constant(tmp_path):
    rng = np.random.default_rng(0)
    path = _write(tmp_path, input=rng.standard_normal((6, 1, 576)).astype(np.float32),
                  state=np.zeros((6, 2, 1, 4), np.float32), sr=np.array(16000))
    model = calibration_models.stateful_model()
    calibration = load_calibration(path, model)
    assert len(calibration.optimise) + len(calibration.holdout) == 6
    assert len(calibration.holdout) == 2 and calibration.n_holdout == 2
    for feed in calibration.optimise:
        assert feed["input"].shape == (1, 576) and feed["state"].shape == (2, 1, 4)
        assert feed["sr"].shape == () and int(feed["sr"]) == 16000
    calibration_models.run_all(model, calibration.optimise)


def test_npz_sequence_model_is_sequential(tmp_path):
    path = _write(tmp_path, input=np.zeros((4, 10, 576), np.float32), h=np.zeros((4, 1, 1, 4), np.float32),
                  c=np.zeros((4, 1, 1, 4), np.float32))
    calibration = load_calibration(path, calibration_models.sequence_model())
    assert calibration.sequential and calibration.n_optimise + calibration.n_holdout == 40


class _Marker:
    def __reduce__(self):
        return calibration_feeds.mark, ("unpickled",)


def test_npz_with_python_objects_is_never_unpickled(tmp_path):
    calibration_feeds.UNPICKLED.clear()
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([_Marker(), _Marker()], dtype=object))
    with pytest.raises(CalibrationError, match=r"objects.npz: array 'x' holds Python objects"):
        load_calibration(str(path), calibration_models.float_model())
    assert calibration_feeds.UNPICKLED == []


def test_corrupt_and_truncated_npz(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(CalibrationError, match="garbage.npz"):
        load_calibration(str(garbage), calibration_models.float_model())
    whole = tmp_path / "whole.npz"
    np.savez(whole, x=np.zeros((50, 4), np.float32))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(whole.read_bytes()[:300])
    with pytest.raises(CalibrationError, match="truncated.npz"):
        load_calibration(str(truncated), calibration_models.float_model())
    single = tmp_path / "single.npz"
    with open(single, "wb") as file:
        np.save(file, np.zeros((4, 4), np.float32))
    with pytest.raises(CalibrationError, match="not an npz archive"):
        load_calibration(str(single), calibration_models.float_model())


@pytest.mark.parametrize("arrays, words", [
    ({"x": np.zeros((4, 4), np.float32), "y": np.zeros((4, 4), np.float32)}, "'y' is not an input of the model"),
    ({"x": np.zeros((4, 4), np.float32)}, "model input 'ids' is left without data"),
    ({"x": np.zeros((4, 4), np.float32), "ids": np.zeros((4, 3), np.float32)},
     "'ids': dtype float32 cannot be cast safely to the model's int64"),
    ({"x": np.zeros((4, 4), np.int64), "ids": np.zeros((4, 3), np.int64)},
     "'x': dtype int64 cannot be cast safely to the model's float32"),
    ({"x": np.zeros((4, 5), np.float32), "ids": np.zeros((4, 3), np.int64)}, "'x'.*does not fit model input 'x'"),
    ({"x": np.zeros(4, np.float32), "ids": np.zeros((4, 3), np.int64)}, "'x': rank 1"),
    ({"x": np.zeros((4, 4), np.float32), "ids": np.zeros((5, 3), np.int64)}, "disagree on the number of samples"),
    ({"x": np.zeros((4, 4), np.float32), "ids": np.zeros((4, 2, 3), np.int64)}, "mixes per-sample arrays"),
    ({"x": np.zeros((1, 4), np.float32), "ids": np.zeros((1, 3), np.int64)}, "at least 2"),
])
def test_bad_npz(tmp_path, arrays, words):
    path = _write(tmp_path, **arrays)
    with pytest.raises(CalibrationError, match=words) as error:
        load_calibration(path, calibration_models.two_input_model())
    assert "\n" not in str(error.value)


def test_callable_source_takes_up_to_samples():
    model = calibration_models.float_model()
    seen = []
    calibration = load_calibration("calibration_feeds:feeds", model, CalibrationOptions(samples=12),
                                   progress=lambda done, total, label: seen.append((done, total)))
    assert calibration.n_optimise + calibration.n_holdout == 12
    assert len(calibration.optimise) == 3 and len(calibration.holdout) == 1
    assert all(feed["x"].dtype == np.float32 and feed["x"].shape == (3, 4) for feed in calibration.optimise)
    assert seen[-1] == (12, 12)
    again = load_calibration("calibration_feeds:feeds", model, CalibrationOptions(samples=12))
    np.testing.assert_array_equal(again.holdout[0]["x"], calibration.holdout[0]["x"])


def test_callable_source_returning_a_list():
    calibration = load_calibration("calibration_feeds:five_feeds", calibration_models.float_model())
    assert len(calibration.optimise) + len(calibration.holdout) == 5 and calibration.n_holdout >= 2
    held = {float(feed["x"][0, 0]) for feed in calibration.holdout}
    assert held.isdisjoint(float(feed["x"][0, 0]) for feed in calibration.optimise)


@pytest.mark.parametrize("source, words", [
    ("calibration_feeds:integer_feeds", "feed 0: input 'x': dtype int64 cannot be cast safely"),
    ("calibration_feeds:wrong_name_feeds", "'y' is not an input of the model"),
    ("calibration_feeds:failing_feeds", "raised RuntimeError: the data loader broke"),
    ("calibration_feeds:not_a_dict", "a feed must be a dict"),
    ("calibration_feeds:NOT_CALLABLE", "has no function 'NOT_CALLABLE'"),
    ("calibration_feeds:missing", "has no function 'missing'"),
    ("no_such_module_for_nnlc:feeds", "cannot import module 'no_such_module_for_nnlc'"),
])
def test_bad_callable_sources(source, words):
    with pytest.raises(CalibrationError, match=words):
        load_calibration(source, calibration_models.float_model())


def test_gaussian_fills_float_inputs():
    model = calibration_models.float_model()
    calibration = load_calibration("gaussian", model, CalibrationOptions(samples=32, seed=5))
    assert len(calibration.optimise) == 3 and len(calibration.holdout) == 1
    assert all(feed["x"].shape == (8, 4) and feed["x"].dtype == np.float32 for feed in calibration.optimise)
    again = load_calibration("gaussian", model, CalibrationOptions(samples=32, seed=5))
    np.testing.assert_array_equal(again.optimise[0]["x"], calibration.optimise[0]["x"])
    assert not _rows(calibration.optimise, "x") & _rows(calibration.holdout, "x")


def test_gaussian_refuses_integer_inputs():
    with pytest.raises(CalibrationError, match="gaussian calibration: .*'input_ids' is not float"):
        load_calibration("gaussian", calibration_models.text_model())
