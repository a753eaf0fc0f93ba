"""nnlc.blockwise.train: block-wise rate-distortion refinement of a calibrated point."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import blockwise_models
import calibrated_models
from nnlc.blockwise.train import BlockwiseOptions, code_length_table, refine
from nnlc.calibrated.api import calibrate
from nnlc.calibrated.compress import CalibratedOptions
from nnlc.calibration import CalibrationOptions
from nnlc.decoder import decode_bitstream


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blockwise")
    images = calibrated_models.correlated_images(240)[:, :, 2:10, 2:10]
    np.savez(folder / "x.npz", x=images)
    model = blockwise_models.residual_cnn(channels=16)
    calibrator = calibrate(model, str(folder / "x.npz"), CalibrationOptions(samples=240),
                           CalibratedOptions(kind="classifier", quiet=True))
    point = calibrator.quantize(3e-5)
    refined, reports = refine(calibrator, point, BlockwiseOptions(steps=120, quiet=True))
    return calibrator, point, refined, reports


def test_blockwise_lowers_distortion_at_no_more_bytes(calibrated):
    calibrator, point, refined, reports = calibrated
    assert len(reports) >= 2 and sum(r.changed for r in reports) > 0
    assert refined.steps == point.steps  # same steps: only integers move
    assert refined.bits <= point.bits * 1.001
    assert refined.fidelity["distortion"] < 0.5 * point.fidelity["distortion"]  # 0.166 -> 0.025 here
    before = calibrator.encode(point).total_bytes
    after = calibrator.encode(refined).total_bytes
    assert after <= before


def test_block_rate_estimate_matches_the_code_length(calibrated):
    calibrator, _, refined, reports = calibrated
    rows = {row["name"]: row for row in calibrator.encode(refined).rows}
    for report in reports:
        ideal = sum(rows[name]["ideal_payload_bits"] for name in report.tensors)  # under the coder's table
        coded = sum(8 * rows[name]["payload_bytes"] for name in report.tensors)  # what the coder spent
        assert abs(report.end_bits - ideal) <= 0.02 * ideal, (report.index, report.end_bits, ideal)
        # + the range coder's flush of a few bytes per tensor
        assert abs(report.end_bits - coded) <= 0.02 * coded + 40 * len(report.tensors), (report.end_bits, coded)


def test_decoded_bitstream_equals_the_trained_rounded_network(calibrated):
    calibrator, _, refined, _ = calibrated
    decoded = decode_bitstream(calibrator.encode(refined).bitstream)
    model = onnx.load_from_string(calibrator.model.SerializeToString())
    for tensor in model.graph.initializer:
        if tensor.name in refined.symbols:
            value = (refined.symbols[tensor.name].astype(np.float32) * np.float32(refined.steps[tensor.name]))
            tensor.CopyFrom(onnx.numpy_helper.from_array(value.reshape(tuple(tensor.dims)), tensor.name))
    feed = calibrator.holdout_feeds[0]
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    actual = ort.InferenceSession(decoded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    np.testing.assert_allclose(actual[0], expected[0], rtol=0, atol=1e-6)


def test_code_length_table_is_the_histogram_code():
    integers = np.array([0, 0, 0, 1, -1, 2])
    low, bits = code_length_table(integers, margin=0)
    assert low == -1 and len(bits) == 4
    assert bits[1] < bits[0]  # 0 is the most frequent value
    np.testing.assert_allclose(np.sum(2.0 ** -bits), 1.0)


def test_resume_after_sigkill_gives_the_same_bitstream(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    onnx.save(blockwise_models.residual_cnn(channels=16), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "x.npz", x=calibrated_models.correlated_images(240)[:, :, 2:10, 2:10])
    config = (f"experiments/configs/onnx_distill.py:model={tmp_path / 'm.onnx'},calibrate={tmp_path / 'x.npz'},"
              f"stages=blockwise,samples=240,lmbda=3e-5,eval=none")

    def command(workdir):
        return [sys.executable, "-m", "experiments.main", f"--config={config}", f"--workdir={workdir}",
                "--config.calibrated.kind=classifier", "--config.blockwise.steps=80"]

    subprocess.run(command(tmp_path / "straight"), check=True, cwd=repo, capture_output=True)
    process = subprocess.Popen(command(tmp_path / "killed"), cwd=repo, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    first_block = tmp_path / "killed" / "blocks" / "block_000.npz"
    deadline = time.monotonic() + 300
    while not first_block.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first_block.exists()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "result.json").exists()
    resumed = subprocess.run(command(tmp_path / "killed"), check=True, cwd=repo, capture_output=True, text=True)
    assert "resumed" in resumed.stderr
    assert (tmp_path / "killed" / "model.nnlc").read_bytes() == (tmp_path / "straight" / "model.nnlc").read_bytes()
