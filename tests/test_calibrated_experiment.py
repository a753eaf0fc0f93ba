"""The calibrated stage as an experiment: configs, their sweeps, experiments.main and launch.report inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import calibrated_models
from launch import points, results
from nnlc.calibrated.experiment import calibrated_config, run_calibrated

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["mobilenet_v2_calibrated", "silero_vad_16k_sequence_calibrated", "silero_vad_calibrated",
           "minilm_calibrated"]


@pytest.mark.parametrize("name", CONFIGS)
def test_shared_model_configs_sweep_every_method_over_lambda(name):
    module = points.load_config_module(str(REPO / "experiments" / "configs" / f"{name}.py"))
    config = module.get_config()
    assert config.stages == "calibrated" and config.lmbda > 0
    collected = points.collect_points(module)
    points.check_points(collected, config)  # every point fits the config's keys and types
    assert {p["calibrated.method"] for p in collected} == {"global", "allocation", "optq"}
    assert len({p["lmbda"] for p in collected}) >= 4
    overridden = module.get_config("method=allocation,target=transparent,samples=64")
    assert (overridden.calibrated.method, overridden.target, overridden.calibration.samples) == \
        ("allocation", "transparent", 64)


def _small_config(tmp_path, method="optq", lmbda=1e-5):
    model_path = tmp_path / "small.onnx"
    onnx.save(calibrated_models.small_cnn(), str(model_path))
    np.savez(tmp_path / "inputs.npz", input=calibrated_models.correlated_images(160))
    config = calibrated_config(str(model_path), str(tmp_path / "inputs.npz"), "none", lmbda)
    config.calibration.samples = 160
    config.calibrated.method = method
    return config


def test_run_calibrated_writes_a_result_that_launch_report_reads(tmp_path):
    runs = []
    for method in ("global", "optq"):
        workdir = tmp_path / method
        result = run_calibrated(_small_config(tmp_path, method), str(workdir), quiet=True)
        assert (workdir / "model.nnlc").stat().st_size == result["bytes"]
        for name in ("decoded.onnx", "original.onnx", "tensors.md", "tensors.csv", "config.json"):
            assert (workdir / name).exists(), name
        assert result["holdout_fidelity"]["n"] > 0 and result["peak_rss_mib"] > 0
        runs.append(result)
    # one step for every tensor in "global", equal slopes otherwise: different steps, same lambda
    global_rows = json.loads((tmp_path / "global" / "tensors.json").read_text())["tensors"]
    steps = {row["step"] for row in global_rows if row["calibration"] == "allocated"}
    assert len(steps) == 1
    loaded = results.load_runs([str(tmp_path)])
    assert len(loaded) == 2 and {r.config["calibrated.method"] for r in loaded} == {"global", "optq"}
    assert results.variant_keys(loaded) == ["calibrated.method"]


def test_experiments_main_dispatches_calibrated_configs(tmp_path):
    config_file = tmp_path / "small_calibrated.py"
    config = _small_config(tmp_path)
    config_file.write_text(
        "from nnlc.calibrated.experiment import calibrated_config\n"
        "def get_config(arg=None):\n"
        f"    config = calibrated_config({config.model!r}, {config.calibration.source!r}, 'none', 1e-5)\n"
        "    config.calibration.samples = 160\n"
        "    return config\n")
    command = [sys.executable, "-m", "experiments.main", f"--config={config_file}", f"--workdir={tmp_path / 'w'}",
               "--config.target=kl<=0.005"]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "w" / "result.json").read_text())
    assert result["stage"] == "calibrated" and result["holdout_fidelity"]["mean_kl"] <= 0.005
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert "is finished" in again.stdout


def test_generic_config_runs_the_blockwise_stage_on_any_onnx_file(tmp_path):
    import blockwise_models

    model_path = tmp_path / "resnet.onnx"
    onnx.save(blockwise_models.residual_cnn(channels=16), str(model_path))
    np.savez(tmp_path / "x.npz", x=calibrated_models.correlated_images(240)[:, :, 2:10, 2:10])
    module = points.load_config_module(str(REPO / "experiments" / "configs" / "onnx_distill.py"))
    config = module.get_config(f"model={model_path},calibrate={tmp_path / 'x.npz'},stages=blockwise,samples=240,"
                               f"lmbda=3e-5,eval=none,image_mean=0.5;0.5;0.5")
    assert config.stages == "blockwise" and config.calibration.image_mean == "0.5;0.5;0.5"
    config.calibrated.kind = "classifier"
    config.blockwise.steps = 60
    result = run_calibrated(config, str(tmp_path / "w"), quiet=True)
    assert result["stage"] == "blockwise" and len(result["blockwise"]["blocks"]) >= 2
    assert result["bytes"] <= result["blockwise"]["calibrated_bytes"]
    assert result["holdout_fidelity"]["distortion"] < result["blockwise"]["calibrated_holdout_fidelity"]["distortion"]
    with pytest.raises(ValueError, match="stages"):
        module.get_config(f"model={model_path},stages=nonsense")
