"""launch.report: tables, plot and ablation from fabricated result.json files."""

import csv
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from launch import report, results  # noqa: E402
from launch.results import CurvePoint, Metric  # noqa: E402

ACCURACY = Metric("accuracy", True)
KL = Metric("mean_kl", False)
PARAMS = 10_000


def write_run(root, name, *, lmbda, size, evaluation, model="zoo:lenet5_digits", conv_decoder="dct",
              with_config=True):
    """A finished point as experiments.main leaves it: result.json and config.json."""
    workdir = root / name
    workdir.mkdir(parents=True)
    result = {"config_hash": f"{abs(hash((str(root), name))):016x}"[:16], "lmbda": lmbda, "encode_s": 0.5,
              "decode_s": 0.01, "bytes": size, "latent_bytes": size - 300, "topology_bytes": 200, "other_bytes": 100,
              "float_bytes": 4 * PARAMS, "bits_per_param": 8 * size / PARAMS, "rate_estimate_bits_per_param": 1.0,
              "ratio": size / (4 * PARAMS), "evaluation": evaluation}
    (workdir / "result.json").write_text(json.dumps(result))
    if with_config:
        config = {"model": model, "lmbda": lmbda, "num_steps": 400, "log_every": 25, "entropy_model": "deep_factorized",
                  "evaluation_options": {}, "reparam": {"conv_decoder": conv_decoder, "dense_decoder": "channel"}}
        (workdir / "config.json").write_text(json.dumps(config))
    return workdir


# Two variants of the digits sweep; uncompressed accuracy 0.96, so the quality target is 0.95.
DCT = [(0.3, 1000, 0.93), (0.1, 2000, 0.95), (0.03, 4000, 0.96), (0.01, 8000, 0.955)]
SCALAR = [(0.3, 1500, 0.90), (0.1, 3000, 0.94), (0.03, 6000, 0.955)]


@pytest.fixture
def ablation_sweep(tmp_path):
    for decoder, points in (("dct", DCT), ("scalar", SCALAR)):
        for lmbda, size, accuracy in points:
            write_run(tmp_path / "sweep", f"lmbda={lmbda},reparam.conv_decoder={decoder}", lmbda=lmbda, size=size,
                      conv_decoder=decoder, evaluation={"accuracy": accuracy, "original_accuracy": 0.96})
    return tmp_path / "sweep"


def test_pareto_front_drops_points_no_better_than_a_smaller_one():
    points = [CurvePoint(s, q) for s, q in [(4000, 0.96), (1000, 0.93), (8000, 0.955), (2000, 0.95), (2500, 0.94)]]
    assert [(p.size, p.quality) for p in results.pareto_front(points, ACCURACY)] == [
        (1000, 0.93), (2000, 0.95), (4000, 0.96)]


def test_size_and_quality_are_interpolated_in_log_size_along_the_front():
    points = [CurvePoint(1000, 0.90), CurvePoint(4000, 0.98)]
    size, note = results.size_at_quality(points, 0.94, ACCURACY)
    assert size == pytest.approx(2000) and note == ""  # halfway in quality is the geometric mean in size
    assert results.quality_at_size(points, 2000, ACCURACY) == (pytest.approx(0.94), "")
    assert results.size_at_quality(points, 0.85, ACCURACY) == (1000, "<=")  # no extrapolation below
    assert results.size_at_quality(points, 0.99, ACCURACY) == (None, "not reached")
    assert results.quality_at_size(points, 500, ACCURACY) == (None, "too small")
    assert results.quality_at_size(points, 8000, ACCURACY) == (0.98, "at least")
    assert results.quality_at_size(points, 4000, ACCURACY) == (0.98, "")


def test_lower_is_better_metrics_interpolate_toward_smaller_values():
    points = [CurvePoint(1000, 0.08), CurvePoint(10_000, 0.002), CurvePoint(20_000, 0.003)]
    assert [p.size for p in results.pareto_front(points, KL)] == [1000, 10_000]
    size, _ = results.size_at_quality(points, 0.01, KL)
    t = (0.01 - 0.08) / (0.002 - 0.08)
    assert size == pytest.approx(1000 * 10 ** t)
    best, meets = results.best_point(points, 0.01, KL)
    assert best.size == 10_000 and meets


def test_metric_is_chosen_from_the_evaluation_keys(tmp_path):
    write_run(tmp_path, "a", lmbda=0.1, size=10, evaluation={"accuracy": 0.9, "original_accuracy": 0.95})
    classifier = write_run(tmp_path, "b", lmbda=0.1, size=10, model="m.onnx", evaluation={
        "n": 200, "top1_agreement_confident": 0.99, "mean_kl": 0.01, "transparent": True})
    write_run(tmp_path, "c", lmbda=0.1, size=10, model="v.onnx", evaluation={
        "n_frames": 356, "decision_agreement": 1.0, "mean_abs_diff": 0.0, "transparent": True})
    write_run(tmp_path, "d", lmbda=0.1, size=10, model="e.onnx", evaluation={
        "n": 300, "mean_cosine": 0.999, "neighbour_agreement": 1.0})
    write_run(tmp_path, "e", lmbda=0.1, size=10, model="o.onnx", evaluation={"n": 5, "max_error": 0.1})
    chosen = {os.path.basename(r.workdir): results.choose_metric([r]) for r in results.load_runs([str(tmp_path)])}
    assert chosen == {"a": ACCURACY, "b": Metric("top1_agreement_confident", True),
                      "c": Metric("decision_agreement", True), "d": Metric("mean_cosine", True),
                      "e": Metric("max_error", False)}
    assert results.choose_metric(results.load_runs([str(classifier)]), "mean_kl") == KL


def test_variants_are_the_config_keys_that_differ_besides_lmbda(ablation_sweep, tmp_path):
    runs = results.load_runs([str(ablation_sweep)])
    assert len(runs) == len(DCT) + len(SCALAR)
    assert results.variant_keys(runs) == ["reparam.conv_decoder"]
    assert set(results.group_by_variant(runs)) == {"reparam.conv_decoder=dct", "reparam.conv_decoder=scalar"}
    same = [r for r in runs if r.config["reparam.conv_decoder"] == "dct"]
    assert list(results.group_by_variant(same)) == ["nnlc"]
    # Without config.json the directory name still tells the variant.
    for entropy_model in ("laplace", "logistic"):
        write_run(tmp_path / "bare", f"entropy_model={entropy_model},lmbda=0.1", lmbda=0.1, size=5, evaluation={},
                  with_config=False)
    bare = results.load_runs([str(tmp_path / "bare")])
    assert list(results.group_by_variant(bare)) == ["entropy_model=laplace", "entropy_model=logistic"]


def test_ablation_matches_quality_and_size_and_picks_each_variants_best_point(ablation_sweep):
    variants = results.group_by_variant(results.load_runs([str(ablation_sweep)]))
    curves = {v: results.curve(runs, ACCURACY) for v, runs in variants.items()}
    target, why = results.default_quality_target(curves, ACCURACY, max_accuracy_drop=0.01)
    assert target == pytest.approx(0.95) and "uncompressed" in why
    assert results.default_size_target(curves) == 1500
    dct, scalar = results.ablation(curves, ACCURACY, target, 1500)
    assert dct.size_at_target == pytest.approx(2000) and dct.relative_size == pytest.approx(1.0)
    assert scalar.size_at_target == pytest.approx(3000 * 2 ** (2 / 3))  # 2/3 of the way from 0.94 to 0.955
    assert scalar.relative_size == pytest.approx(1.5 * 2 ** (2 / 3))
    assert dct.quality_at_size == pytest.approx(0.93 + 0.02 * math.log(1.5) / math.log(2))
    assert scalar.quality_at_size == pytest.approx(0.90)
    assert (dct.best.size, dct.best.run.lmbda, dct.best_meets_target) == (2000, 0.1, True)
    assert (scalar.best.size, scalar.best.run.lmbda, scalar.best_meets_target) == (6000, 0.03, True)
    [missing] = results.ablation({"x": curves["reparam.conv_decoder=scalar"]}, ACCURACY, 0.99, 1500)
    assert missing.size_note == "not reached" and not missing.best_meets_target and missing.best.size == 6000


def test_report_writes_csv_markdown_and_png(ablation_sweep, tmp_path):
    output = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "launch.report", str(ablation_sweep), f"--output={output}",
                          "--nncodec_json="], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(output)) == ["rate_fidelity_lenet5_digits.png", "report.md", "results.csv"]
    assert (output / "rate_fidelity_lenet5_digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(output / "results.csv")))
    assert len(rows) == len(DCT) + len(SCALAR)
    first = rows[0]
    assert (first["model"], first["variant"], first["bytes"], first["metric"], first["quality"], first["lmbda"]) == (
        "lenet5_digits", "reparam.conv_decoder=dct", "1000", "accuracy", "0.93", "0.3")
    assert float(first["bits_per_param"]) == pytest.approx(0.8) and float(first["ratio"]) == pytest.approx(0.025)
    assert first["workdir"].endswith("lmbda=0.3,reparam.conv_decoder=dct") and len(first["config_hash"]) == 16
    markdown = (output / "report.md").read_text()
    assert "![lenet5_digits](rate_fidelity_lenet5_digits.png)" in markdown
    assert "| reparam.conv_decoder=scalar | 0.03 | 6,000 | 0.15 | 4.8 | 0.955 |" in markdown
    assert "### Ablation" in markdown and "bytes at accuracy >= 0.95" in markdown
    assert "| reparam.conv_decoder=dct | 4 | 2,000 | 1.00 | 0.9417 | 2,000 | 0.9500 | 0.1 |" in markdown
    assert "| reparam.conv_decoder=scalar | 3 | 4,762 | 2.38 | 0.9000 | 6,000 | 0.9550 | 0.03 |" in markdown


def write_nncodec_json(path, with_fidelity: bool):
    runs = [{"qp": qp, "bytes": size, "bits_per_param": 8 * size / PARAMS, "mse": 1e-6}
            for qp, size in ((-32, 3000), (-38, 5000), (-44, 9000))]
    if with_fidelity:
        for run, agreement in zip(runs, (0.95, 0.99, 1.0)):
            run["evaluation"] = {"top1_agreement_confident": agreement}
    path.write_text(json.dumps({"codec": "nncodec", "models": {
        "mobilenet_v2": {"file": "mobilenet_v2.onnx", "params": PARAMS, "runs": runs}}}))


@pytest.mark.parametrize("with_fidelity", [True, False])
def test_nncodec_is_drawn_beside_nnlc_for_the_same_model(tmp_path, with_fidelity):
    for lmbda, size, agreement in ((0.3, 1000, 0.97), (0.1, 2000, 0.99), (0.03, 4000, 1.0)):
        write_run(tmp_path / "sweep", f"lmbda={lmbda}", lmbda=lmbda, size=size,
                  model="../shared/models/mobilenet_v2.onnx",
                  evaluation={"n": 200, "top1_agreement_confident": agreement, "mean_kl": lmbda / 10,
                              "transparent": agreement >= 0.99})
    write_nncodec_json(tmp_path / "nncodec.json", with_fidelity)
    options = report.ReportOptions(nncodec_json=str(tmp_path / "nncodec.json"))
    written = report.write_report([str(tmp_path / "sweep")], str(tmp_path / "out"), options)
    assert str(tmp_path / "out" / "rate_fidelity_mobilenet_v2.png") in written
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Metric: `top1_agreement_confident`" in markdown and "| True |" in markdown
    if with_fidelity:  # one variant plus NNCodec: the comparison table, target = transparency threshold 0.99
        assert "bytes at top1_agreement_confident >= 0.99" in markdown
        assert "size target 3,000 bytes" in markdown  # NNCodec's smallest point
        assert "| nnlc | 3 | 2,000 | 1.00 | 0.9958 | 2,000 | 0.9900 | 0.1 |" in markdown
        assert "| NNCodec | 3 | 5,000 | 2.50 | 0.9500 | 5,000 | 0.9900 | qp -38 |" in markdown
    else:
        assert "### Ablation" not in markdown
        assert "has no `top1_agreement_confident` per run; its sizes: 3,000 (qp -32), 5,000 (qp -38)" in markdown


def test_ablation_variants_are_named_by_what_they_change_from_the_base(tmp_path):
    """One-change-at-a-time sweeps: each variant is labelled by its changed keys only, the base as 'base'."""
    for name, conv_decoder, entropy_model in (("base", "dct", "deep_factorized"), ("v1", "dct", "laplace"),
                                              ("v2", "scalar", "deep_factorized")):
        workdir = write_run(tmp_path / "sweep", name, lmbda=0.1, size=1000, conv_decoder=conv_decoder,
                            evaluation={"accuracy": 0.9, "original_accuracy": 0.96})
        config = json.loads((workdir / "config.json").read_text())
        config["entropy_model"] = entropy_model
        (workdir / "config.json").write_text(json.dumps(config))
    runs = results.load_runs([str(tmp_path / "sweep")])
    assert sorted(results.group_by_variant(runs)) == ["base", "entropy_model=laplace", "reparam.conv_decoder=scalar"]
