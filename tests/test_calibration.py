"""nnlc.calibration: source dispatch, graph inputs, options, safe casts and the hold-out split."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import calibration_models
from nnlc.calibration import (
    CalibrationError, CalibrationOptions, CalibrationSet, check_feed, graph_inputs, input_specs,
    load_calibration,
)
from nnlc.calibration.base import cast_safely, choose_holdout
from nnlc.errors import NnlcError


def test_graph_inputs_skip_initializers_and_mark_dynamic_dims():
    model = calibration_models.two_input_model()
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    model.graph.initializer.append(weight)
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [4]))
    assert graph_inputs(model) == [("x", np.dtype(np.float32), [None, 4]),
                                   ("ids", np.dtype(np.int64), [None, 3])]


def test_calibration_error_is_an_nnlc_error():
    assert issubclass(CalibrationError, NnlcError)


@pytest.mark.parametrize("options, words", [
    (CalibrationOptions(samples=1), "samples"),
    (CalibrationOptions(holdout_fraction=0.0), "holdout_fraction"),
    (CalibrationOptions(holdout_fraction=1.0), "holdout_fraction"),
    (CalibrationOptions(batch_size=0), "batch_size"),
    (CalibrationOptions(layout="chw"), "layout"),
    (CalibrationOptions(max_length=1), "max_length"),
])
def test_bad_options_are_refused(options, words):
    with pytest.raises(CalibrationError, match=words):
        load_calibration("gaussian", calibration_models.float_model(), options)


def test_safe_casts_only():
    assert cast_safely(np.ones(3, np.float64), np.dtype(np.float32), "x").dtype == np.float32
    assert cast_safely(np.ones(3, np.int32), np.dtype(np.int64), "x").dtype == np.int64
    assert cast_safely(np.ones(3, np.int64), np.dtype(np.int32), "x").dtype == np.int32
    with pytest.raises(CalibrationError, match="outside the range of int32"):
        cast_safely(np.array([2**40]), np.dtype(np.int32), "ids")
    with pytest.raises(CalibrationError, match="float32 cannot be cast safely to the model's int64"):
        cast_safely(np.ones(3, np.float32), np.dtype(np.int64), "ids")
    with pytest.raises(CalibrationError, match="int64 cannot be cast safely to the model's float32"):
        cast_safely(np.ones(3, np.int64), np.dtype(np.float32), "x")
    with pytest.raises(CalibrationError, match="overflow"):
        cast_safely(np.array([1e300]), np.dtype(np.float32), "x")


def test_check_feed_names_shapes_and_ranks():
    specs = input_specs(calibration_models.two_input_model())
    good = {"x": np.zeros((2, 4)), "ids": np.zeros((2, 3), np.int32)}
    checked = check_feed(good, specs, "feed")
    assert checked["x"].dtype == np.float32 and checked["ids"].dtype == np.int64
    with pytest.raises(CalibrationError, match="'ids' is left without data"):
        check_feed({"x": good["x"]}, specs, "feed")
    with pytest.raises(CalibrationError, match="'z' is not an input of the model"):
        check_feed(good | {"z": good["x"]}, specs, "feed")
    with pytest.raises(CalibrationError, match="axis 1"):
        check_feed(good | {"x": np.zeros((2, 5))}, specs, "feed")
    with pytest.raises(CalibrationError, match="rank 1"):
        check_feed(good | {"x": np.zeros(4)}, specs, "feed")


def test_holdout_by_group_keeps_groups_whole():
    groups = np.repeat(np.arange(8), 10)
    mask, by_group = choose_holdout(groups, 0.25, np.random.default_rng(0))
    assert by_group
    assert 10 <= mask.sum() <= 30
    for group in range(8):
        assert len(set(mask[groups == group])) == 1


def test_holdout_by_sample_with_few_groups():
    groups = np.repeat(np.arange(3), 10)
    mask, by_group = choose_holdout(groups, 0.25, np.random.default_rng(0))
    assert not by_group and mask.sum() == 8


@pytest.mark.parametrize("count", [2, 3, 5])
def test_holdout_never_empty_nor_everything(count):
    for fraction in (0.01, 0.5, 0.99):
        mask, _ = choose_holdout(np.arange(count), fraction, np.random.default_rng(1))
        assert 1 <= mask.sum() <= count - 1


def test_one_sample_cannot_be_split():
    with pytest.raises(CalibrationError, match="at least 2"):
        choose_holdout(np.zeros(1), 0.25, np.random.default_rng(0))


def test_sample_counts_fall_back_to_leading_dims():
    calibration = CalibrationSet([{"x": np.zeros((3, 4))}, {"x": np.zeros((2, 4))}], [{"x": np.zeros((1, 4))}], "")
    assert calibration.n_optimise == 5 and calibration.n_holdout == 1


def test_source_not_found(tmp_path):
    with pytest.raises(CalibrationError, match="calibration source not found: .*missing.npz"):
        load_calibration(str(tmp_path / "missing.npz"), calibration_models.float_model())


def test_unknown_file_type(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(CalibrationError, match="unknown calibration file type .csv"):
        load_calibration(str(path), calibration_models.float_model())


def test_empty_folder_and_folder_without_usable_files(tmp_path):
    with pytest.raises(CalibrationError, match="no usable files"):
        load_calibration(str(tmp_path), calibration_models.float_model())
    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(CalibrationError, match="no usable files"):
        load_calibration(str(tmp_path), calibration_models.float_model())


def test_folder_of_images_and_wavs_is_refused(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.wav").write_bytes(b"")
    with pytest.raises(CalibrationError, match="both images"):
        load_calibration(str(tmp_path), calibration_models.image_model())


def test_gaussian_default_options():
    calibration = load_calibration("gaussian", calibration_models.float_model())
    assert calibration.n_optimise + calibration.n_holdout == 256
    assert isinstance(calibration.description, str) and "\n" not in calibration.description


def test_model_with_non_tensor_input_is_refused():
    model = calibration_models.float_model()
    sequence = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)
    model.graph.input.append(sequence)
    with pytest.raises(CalibrationError, match="'seq' is not a tensor"):
        graph_inputs(model)
    assert isinstance(model, onnx.ModelProto)
