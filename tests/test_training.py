"""Learned mode end to end: train -> encode -> standalone decode -> evaluate; resume; devices."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from nnlc import onnx_io
from nnlc.decoder import decode_bitstream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(**overrides):
    sys.path.insert(0, ROOT)
    from experiments.configs import test as test_config

    config = test_config.get_config()
    config.float_train_steps = 60
    config.num_steps = 40
    config.checkpoint_every = 10
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from nnlc.training.loop import train_and_evaluate

    workdir = str(tmp_path_factory.mktemp("run"))
    config = small_config(coding_tables="learned", lmbda=0.5)
    return workdir, config, train_and_evaluate(config, workdir)


def test_end_to_end_run_writes_everything(finished_run):
    workdir, _, result = finished_run
    for name in ("config.json", "metrics.jsonl", "model.nnlc", "decoded.onnx", "result.json", "original.onnx"):
        assert os.path.exists(os.path.join(workdir, name)), name
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [line["step"] for line in lines] == [10, 20, 30, 40]
    assert all(np.isfinite(line["loss"]) for line in lines)
    assert json.load(open(os.path.join(workdir, "result.json")))["bytes"] == result["bytes"]
    assert result["bytes"] == os.path.getsize(os.path.join(workdir, "model.nnlc"))
    assert result["evaluation"]["accuracy"] > 0.5 and result["ratio"] < 0.5


def test_decoded_network_equals_the_trained_rounded_forward_pass(finished_run):
    _, _, result = finished_run
    assert result["decoded_vs_trained_max_abs_diff"] <= 1e-6


def test_training_rate_estimate_matches_the_code_length(finished_run):
    workdir, _, result = finished_run
    estimate = result["rate_estimate_bits_per_param"]
    assert abs(result["latent_ideal_bits_per_param"] - estimate) <= 0.02 * estimate
    facts = [row for row in onnx_io.find_float_tensors(onnx.load(os.path.join(workdir, "decoded.onnx")))]
    assert facts


def test_bitstream_decodes_to_the_saved_onnx(finished_run):
    workdir, _, _ = finished_run
    with open(os.path.join(workdir, "model.nnlc"), "rb") as handle:
        decoded = decode_bitstream(handle.read())
    saved = onnx.load(os.path.join(workdir, "decoded.onnx"))
    for name, record in onnx_io.find_float_tensors(saved).items():
        np.testing.assert_array_equal(onnx_io.find_float_tensors(decoded)[name].array, record.array)


def test_resume_after_interruption_gives_the_same_bitstream(finished_run, tmp_path):
    from nnlc.training.loop import train_and_evaluate

    reference_dir, config, _ = finished_run
    workdir = str(tmp_path / "resumed")
    assert train_and_evaluate(config, workdir, stop_after=20) is None
    assert not os.path.exists(os.path.join(workdir, "result.json"))
    train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "model.nnlc"), "rb") as a, open(os.path.join(reference_dir, "model.nnlc"), "rb") as b:
        assert a.read() == b.read()


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    from nnlc.training.loop import train_and_evaluate

    config = small_config(learning_rate_latents=1e30, learning_rate_decoder=1e30, num_steps=20)
    with pytest.raises(FloatingPointError, match="loss is"):
        train_and_evaluate(config, str(tmp_path))


DEVICES_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r})
    import jax, numpy as np
    from nnlc.training.loop import train_and_evaluate
    from tests.test_training import small_config
    config = small_config(num_steps=20, batch_size=32, coding_tables="fitted")
    result = train_and_evaluate(config, {workdir!r})
    print(json.dumps({{"devices": jax.device_count(), "bytes": result["bytes"],
                      "rate": result["rate_estimate_bits_per_param"]}}))
""")


@pytest.mark.slow
def test_four_devices_match_one_device(tmp_path):
    outputs = []
    for devices in (1, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
        script = DEVICES_SCRIPT.format(root=ROOT, workdir=str(tmp_path / f"d{devices}"))
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
        assert run.returncode == 0, run.stderr[-3000:]
        outputs.append(json.loads(run.stdout.strip().splitlines()[-1]))
    assert [o["devices"] for o in outputs] == [1, 4]
    assert outputs[0]["rate"] == pytest.approx(outputs[1]["rate"], rel=1e-4)
    assert abs(outputs[0]["bytes"] - outputs[1]["bytes"]) <= 0.01 * outputs[0]["bytes"]


def test_rate_distortion_rounding_moves_ties_toward_the_likely_value():
    from nnlc.training.final_encode import rate_distortion_rounding

    latents = np.array([0.1, -0.2, 0.05, 0.0, 0.45, 0.55, 1.0, 2.49])
    nearest = np.rint(latents)
    rounded = rate_distortion_rounding(latents, tradeoff=0.5)
    assert rounded[4] == 0 and rounded[5] == 0  # both near 0.5: toward the frequent 0
    assert rounded[6] == 1 and rounded[7] in (2, 3)
    assert np.array_equal(rate_distortion_rounding(latents, tradeoff=0.0), nearest)
