"""Calibrated compression end to end on a small CNN with correlated inputs (nnlc.calibrated.api, CLI)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import calibrated_models
from test_decoder_standalone import BLOCKER
from nnlc import onnx_io
from nnlc.calibrated.api import compress_calibrated
from nnlc.calibrated.analysis import write_analysis
from nnlc.calibrated.compress import CalibratedOptions, Calibrator
from nnlc.calibrated.distortion import Reference
from nnlc.calibrated.target import TargetNotReached
from nnlc.calibration import CalibrationOptions, load_calibration
from nnlc.decoder import decode_bitstream, inspect_bitstream

QUIET = CalibratedOptions(quiet=True)


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibrated")
    model = calibrated_models.small_cnn()
    np.savez(folder / "inputs.npz", input=calibrated_models.correlated_images(160))
    calibration = load_calibration(str(folder / "inputs.npz"), model, CalibrationOptions(samples=160))
    return model, calibration, folder


def _outputs(model_bytes: bytes, feeds: list[dict]) -> list[np.ndarray]:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]


def test_target_search_meets_the_target_on_the_holdout(problem):
    model, calibration, _ = problem
    result = compress_calibrated(model, calibration, options=QUIET, target="kl<=0.003")
    assert result.point.fidelity["mean_kl"] <= 0.003
    # the decoded bitstream (not the in-memory point) meets it, measured afresh on the hold-out
    from nnlc.decoder import decode_bitstream

    decoded = decode_bitstream(result.bitstream)
    reference = Reference("classifier", calibration.holdout, _outputs(model.SerializeToString(), calibration.holdout))
    metrics = reference.fidelity(_outputs(decoded.SerializeToString(), calibration.holdout))
    assert metrics["mean_kl"] == pytest.approx(result.point.fidelity["mean_kl"], rel=1e-4, abs=1e-9)
    assert metrics["mean_kl"] <= 0.003
    # a looser target gives a smaller bitstream
    looser = compress_calibrated(model, calibration, options=QUIET, target="kl<=0.02")
    assert looser.encoded.total_bytes < result.encoded.total_bytes
    assert all(entry["passes"] == (entry["mean_kl"] <= 0.003) for entry in result.search.table())


def test_unreachable_target_gives_the_clear_message(problem):
    model, calibration, _ = problem
    with pytest.raises(TargetNotReached, match="best fidelity reached"):
        compress_calibrated(model, calibration, options=QUIET, target="kl<=1e-300")


def test_two_runs_give_byte_identical_bitstreams(problem):
    model, calibration, folder = problem
    first = compress_calibrated(model, str(folder / "inputs.npz"), CalibrationOptions(samples=160), QUIET)
    second = compress_calibrated(model, str(folder / "inputs.npz"), CalibrationOptions(samples=160), QUIET)
    assert first.bitstream == second.bitstream
    assert first.point.fidelity["transparent"]


def test_optq_beats_allocation_alone_at_the_same_lambda(problem):
    model, calibration, _ = problem
    optq = compress_calibrated(model, calibration, options=QUIET, lmbda=2e-5)
    rounding = compress_calibrated(model, calibration, options=CalibratedOptions(method="allocation", quiet=True),
                                   lmbda=2e-5)
    # same steps (same allocation), lower distortion from the error compensation
    assert optq.point.steps == rounding.point.steps
    assert optq.point.fidelity["distortion"] < rounding.point.fidelity["distortion"]


def test_equal_slopes_in_the_report_rows(problem):
    model, calibration, _ = problem
    result = compress_calibrated(model, calibration, options=QUIET, lmbda=1e-5)
    slopes = [row["slope"] for row in result.rows if row.get("calibration") == "allocated"]
    assert len(slopes) == 3
    # the qp grid is a quarter octave: snapping moves a slope by at most 2^(1/4) squared either way
    assert all(1e-5 / 2 ** 0.5 <= s <= 1e-5 * 2 ** 0.5 for s in slopes)


def test_standalone_decoder_decodes_the_result_where_jax_cannot_import(problem, tmp_path):
    model, calibration, _ = problem
    result = compress_calibrated(model, calibration, options=QUIET, lmbda=1e-5)
    bitstream, output = tmp_path / "model.nnlc", tmp_path / "decoded.onnx"
    bitstream.write_bytes(result.bitstream)
    script = BLOCKER + (f"from nnlc.decoder.__main__ import main\n"
                        f"code = main([{str(bitstream)!r}, '-o', {str(output)!r}, '--quiet'])\n"
                        f"assert not [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax')]\n"
                        f"sys.exit(code)\n")
    subprocess.run([sys.executable, "-c", script], check=True)
    decoded = onnx.load(str(output))
    expected = {name: np.float32(result.point.steps[name]) * symbols
                for name, symbols in result.point.symbols.items()}
    for name, record in onnx_io.find_float_tensors(decoded).items():
        if name in expected:
            np.testing.assert_array_equal(record.array, expected[name].astype(np.float32))


def test_tensors_that_break_when_perturbed_stay_exact(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    # y = (x @ weight) * mean(log(scale)): rounding the small entries of `scale` to 0 gives log(0) = -inf,
    # so `scale` must be stored exactly while `weight` is allocated
    rng = np.random.default_rng(0)
    scale = rng.uniform(1e-3, 1e-2, (8, 4)).astype(np.float32)
    scale[0] = 4.0
    weight = rng.standard_normal((16, 4)).astype(np.float32)
    nodes = [helper.make_node("Log", ["scale"], ["l"]), helper.make_node("ReduceMean", ["l"], ["r"], axes=[0]),
             helper.make_node("MatMul", ["x", "weight"], ["m"]), helper.make_node("Mul", ["m", "r"], ["y"])]
    graph = helper.make_graph(nodes, "log", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
                              [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(weight, "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32))
    result = compress_calibrated(model, str(tmp_path / "x.npz"), CalibrationOptions(samples=64),
                                 CalibratedOptions(kind="mse", quiet=True), lmbda=1e-9)
    rows = {row["name"]: row for row in result.rows}
    assert rows["scale"]["calibration"] == "breaks when perturbed" and rows["scale"]["mode"] == "raw"
    assert rows["weight"]["calibration"] == "allocated"


def test_analysis_writes_table_csv_json_and_plot(problem, tmp_path):
    model, calibration, _ = problem
    result = compress_calibrated(model, calibration, options=QUIET, lmbda=1e-5)
    written = write_analysis(str(tmp_path / "analysis"), result.rows, result.summary())
    names = {path.rsplit("/", 1)[-1] for path in written}
    assert {"tensors.md", "tensors.csv", "tensors.json"} <= names
    data = json.loads((tmp_path / "analysis" / "tensors.json").read_text())
    assert data["summary"]["bytes"] == result.encoded.total_bytes
    assert sum(row["bytes"] for row in data["tensors"]) <= result.encoded.total_bytes
    assert abs(sum(row["share"] for row in data["tensors"]) - 1.0) < 1e-9
    assert "| conv2.weight | 1152 |" in (tmp_path / "analysis" / "tensors.md").read_text()
    if "bits_vs_sensitivity.png" in names:
        assert (tmp_path / "analysis" / "bits_vs_sensitivity.png").read_bytes()[:4] == b"\x89PNG"


def _nnlc(*args):
    return subprocess.run([sys.executable, "-m", "nnlc.cli", *args], capture_output=True, text=True)


def test_cli_compress_and_analyze_with_calibration(problem, tmp_path):
    model, _, folder = problem
    onnx.save(model, str(tmp_path / "m.onnx"))
    out = _nnlc("compress", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.nnlc"),
                f"--calibrate={folder / 'inputs.npz'}", "--samples=160", "--target=kl<=0.005", "--quiet",
                f"--report={tmp_path / 'report.json'}")
    assert out.returncode == 0, out.stderr
    assert "hold-out fidelity: mean_kl" in out.stdout and "peak memory" in out.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["bytes"] == (tmp_path / "m.nnlc").stat().st_size and report["holdout_fidelity"]["mean_kl"] <= 0.005
    out = _nnlc("analyze", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "an"), f"--calibrate={folder / 'inputs.npz'}",
                "--samples=160", "--lmbda=1e-5", "--quiet")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "an" / "tensors.csv").read_text().startswith("name,params,role")


def test_cli_dependent_quantization_writes_a_1_4_file_that_decodes(problem, tmp_path):
    model, _, folder = problem
    onnx.save(model, str(tmp_path / "m.onnx"))
    out = _nnlc("compress", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.nnlc"),
                f"--calibrate={folder / 'inputs.npz'}", "--samples=160", "--lmbda=1e-5", "--dependent_quantization",
                "--quiet", f"--report={tmp_path / 'report.json'}")
    assert out.returncode == 0, out.stderr
    data = (tmp_path / "m.nnlc").read_bytes()
    assert data[4:6] == bytes((1, 4))
    assert "dependent" in {row["mode"] for row in inspect_bitstream(data)["tensors"]}
    decode_bitstream(data)


@pytest.mark.parametrize("flags, message", [
    (["--lmbda=1e-5"], "need calibration inputs"),
    (["--calibrate=SOURCE_DIR", "--target=kl<=0.01", "--lmbda=1e-5"], "not both"),
    (["--calibrate=SOURCE_DIR", "--qp=-30"], "data-free mode"),
    (["--calibrate=SOURCE_DIR", "--target=cos>0.9"], "cannot read target"),
    (["--calibrate=/no/such/place"], "not found"),
    (["--calibrate=SOURCE_DIR", "--row_max_coarsening=0.5"], "at least 1"),
])
def test_cli_bad_calibrated_flags_give_one_line(problem, tmp_path, flags, message):
    model, _, folder = problem
    onnx.save(model, str(tmp_path / "m.onnx"))
    flags = [f.replace("SOURCE_DIR", str(folder / "inputs.npz")) for f in flags]
    out = _nnlc("compress", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.nnlc"), "--samples=160", "--quiet",
                *flags)
    assert out.returncode == 1 and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "m.nnlc").exists()


def test_stateful_networks_are_checked_running_free_over_whole_clips(tmp_path):
    from nnlc import fidelity
    from nnlc.data import audio as data_audio

    rng = np.random.default_rng(0)
    folder = tmp_path / "wavs"
    folder.mkdir()
    for index in range(6):
        envelope = np.repeat(rng.random(12) > 0.5, 512)[: (6 + index) * 512 + 100]
        samples = 0.3 * rng.standard_normal(len(envelope)) * (0.2 + envelope)
        data_audio.write_wav(folder / f"clip{index}.wav", samples, 16000)
    model = calibrated_models.stateful_rnn()
    calibration = load_calibration(str(folder), model, CalibrationOptions(samples=48, batch_size=4))
    assert calibration.holdout_streams and calibration.optimise_streams
    assert "free-running" in calibration.description
    calibrator = Calibrator(model, calibration, CalibratedOptions(kind="vad", quiet=True))
    # the free-running hold-out equals the benchmark's own stateful runner on those clips
    clips = [data_audio.AudioClip(f"clip{g}", data_audio.read_wav(folder / f"clip{g}.wav")[0])
             for g in calibration.holdout_groups]
    expected = fidelity.run_vad_stateful(ort.InferenceSession(model.SerializeToString(),
                                                              providers=["CPUExecutionProvider"]), clips)
    produced = np.concatenate([outputs[0].ravel() for outputs in calibrator.holdout_outputs({})])
    np.testing.assert_allclose(produced, expected, rtol=1e-5, atol=1e-6)
    point = calibrator.quantize(1e-6)
    assert point.fidelity["n_frames"] == len(expected)
    assert {"recurrent", "readout"} <= set(point.symbols)
