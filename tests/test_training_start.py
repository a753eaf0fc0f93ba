"""The end-to-end trainer started from a calibrated point (nnlc.training.start, stages=...+end_to_end)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import onnx
import pytest

import calibrated_models
from launch import points
from nnlc import quantization
from nnlc.decoder import decode_bitstream
from nnlc.onnx_io import find_float_tensors
from nnlc.training.problem import build_problem, decoded_weights
from nnlc.training.start import apply_start, load_start, save_start

REPO = Path(__file__).resolve().parents[1]


def _chained_config(tmp_path, **extra):
    model_path = tmp_path / "small.onnx"
    onnx.save(calibrated_models.small_cnn(), str(model_path))
    np.savez(tmp_path / "inputs.npz", input=calibrated_models.correlated_images(160))
    module = points.load_config_module(str(REPO / "experiments" / "configs" / "onnx_distill.py"))
    arguments = {"model": model_path, "calibrate": tmp_path / "inputs.npz", "stages": "calibrated+end_to_end",
                 "samples": 160, "start_lmbda": 1e-5, "eval": "none", "num_steps": 4, **extra}
    config = module.get_config(",".join(f"{key}={value}" for key, value in arguments.items()))
    config.calibrated.kind = "classifier"
    config.entropy_warmup_steps = 10
    config.batch_size = 8
    config.log_every = 2
    config.checkpoint_every = 4
    return config


def test_chained_config_holds_both_stages(tmp_path):
    config = _chained_config(tmp_path)
    assert config.stages == "calibrated+end_to_end" and config.target == ""
    assert config.reparam.conv_decoder == config.reparam.dense_decoder == config.reparam.bias_decoder == "scalar"
    assert config.calibration.samples == 160 and config.start_lmbda == 1e-5 and config.num_steps == 4


def test_trainer_starts_exactly_at_the_calibrated_point(tmp_path):
    from nnlc.calibrated.experiment import run_calibrated

    config = _chained_config(tmp_path)
    before = run_calibrated(config, str(tmp_path / "calibrated"), quiet=True, stage="calibrated")
    steps, symbols = load_start(str(tmp_path / "calibrated" / "start.npz"))
    assert steps and set(steps) == set(symbols)
    model = onnx.load(config.model)
    problem, params = build_problem(model, config, jax.random.key(0))
    params, report = apply_start(problem, params, steps, symbols)
    assert report.started and not report.not_scalar
    weights = decoded_weights(problem, params, rounding="round")
    calibrated = find_float_tensors(decode_bitstream((tmp_path / "calibrated" / "model.nnlc").read_bytes()))
    for name in report.started:
        expected = quantization.dequantize(symbols[name], np.float32(steps[name])).reshape(symbols[name].shape)
        np.testing.assert_allclose(np.asarray(weights[name]), expected, rtol=2e-7, atol=0)
        np.testing.assert_allclose(expected, calibrated[name].array, rtol=0, atol=0)
    assert before["bytes"] > 0


def test_bad_start_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="start_from=.*no such file"):
        load_start(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a start file"):
        load_start(str(tmp_path / "other.npz"))
    save_start(str(tmp_path / "ok.npz"), {"w": 0.5}, {"w": np.arange(6).reshape(2, 3)})
    steps, symbols = load_start(str(tmp_path / "ok.npz"))
    assert steps == {"w": 0.5} and symbols["w"].shape == (2, 3)


def test_calibrated_then_end_to_end_runs_from_one_config(tmp_path):
    from nnlc.calibrated.experiment import run_stages

    config = _chained_config(tmp_path)
    workdir = tmp_path / "run"
    result = run_stages(config, str(workdir), quiet=True)
    assert (workdir / "calibrated" / "result.json").exists() and (workdir / "calibrated" / "start.npz").exists()
    written = json.loads((workdir / "result.json").read_text())
    assert written["start_stage"]["stage"] == "calibrated" and written["start_stage"]["bytes"] > 0
    assert result["start_stage"]["bytes"] == written["start_stage"]["bytes"]
    assert (workdir / "metrics.jsonl").exists()


def test_channel_decoders_start_exactly_at_row_steps_and_at_one_step(tmp_path):
    config = _chained_config(tmp_path)
    config.reparam.conv_decoder = config.reparam.dense_decoder = "channel"
    config.reparam.min_channel_elements = 1
    model = onnx.load(config.model)
    problem, params = build_problem(model, config, jax.random.key(0))
    channel = [name for name, entry in problem.plan.items() if entry.kind == "channel"]
    assert len(channel) >= 2
    rng = np.random.default_rng(0)
    steps, symbols = {}, {}
    for index, name in enumerate(channel):
        shape = problem.records[name].array.shape
        symbols[name] = rng.integers(-20, 21, size=shape)
        # row steps for the first tensor (a table with row steps), one step for the others
        steps[name] = rng.uniform(0.01, 0.1, size=shape[0]).astype(np.float32) if index == 0 else 0.03
    save_start(str(tmp_path / "start.npz"), steps, symbols)
    steps, symbols = load_start(str(tmp_path / "start.npz"))
    assert isinstance(steps[channel[0]], np.ndarray) and isinstance(steps[channel[1]], float)
    params, report = apply_start(problem, params, steps, symbols)
    assert set(report.started) == set(channel) and not report.not_scalar
    weights = decoded_weights(problem, params, rounding="round")
    for name in channel:
        shape = symbols[name].shape
        row = np.broadcast_to(np.asarray(steps[name], np.float32), (shape[0],)).reshape((-1,) + (1,) * (len(shape) - 1))
        np.testing.assert_allclose(np.asarray(weights[name]), symbols[name].astype(np.float32) * row, rtol=3e-7)
    # row steps where the decoder is scalar cannot be held: that tensor keeps its own start
    config.reparam.conv_decoder = config.reparam.dense_decoder = "scalar"
    problem, params = build_problem(model, config, jax.random.key(0))
    _, report = apply_start(problem, params, {channel[0]: steps[channel[0]]}, symbols)
    assert report.not_scalar == [channel[0]] and not report.started
