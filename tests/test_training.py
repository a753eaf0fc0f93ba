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
    import json, sys
    sys.path.insert(0, {root!r})
    import jax
    from nnlc.training.loop import train_and_evaluate
    from tests.test_training import small_config
    config = small_config(float_train_steps=30, num_steps=12, batch_size=16, log_every=4, checkpoint_every=12,
                          coding_tables="fitted", evaluation="none")
    result = train_and_evaluate(config, {workdir!r})
    print(json.dumps({{"devices": jax.device_count(), "rate": result["rate_estimate_bits_per_param"]}}))
""")


def test_four_devices_write_the_same_bitstream_as_one_device(tmp_path):
    """Gradient groups (nnlc/training/step.py) make the training independent of the device count:
    the same parameters bit for bit, hence the same bitstream. Both runs at once (about 40 s on 2 cores)."""
    runs = {}
    for devices in (1, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
        script = DEVICES_SCRIPT.format(root=ROOT, workdir=str(tmp_path / f"d{devices}"))
        runs[devices] = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    outputs = {}
    for devices, run in runs.items():
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]
        outputs[devices] = json.loads(stdout.strip().splitlines()[-1])
    assert [outputs[d]["devices"] for d in (1, 4)] == [1, 4]
    assert outputs[1]["rate"] == outputs[4]["rate"]
    metrics = [open(tmp_path / f"d{d}" / "metrics.jsonl").read().splitlines() for d in (1, 4)]
    for one, four in zip(*metrics):  # every logged loss equal (timings aside)
        one, four = json.loads(one), json.loads(four)
        assert {k: v for k, v in one.items() if k != "steps_per_s"} == {k: v for k, v in four.items()
                                                                        if k != "steps_per_s"}
    with open(tmp_path / "d1" / "model.nnlc", "rb") as a, open(tmp_path / "d4" / "model.nnlc", "rb") as b:
        assert a.read() == b.read()


def test_grouped_gradient_equals_the_batch_mean_gradient(finished_run):
    """gradient_groups changes only the order of the sums: the same gradient up to float rounding."""
    import jax
    import jax.numpy as jnp
    import optax

    from nnlc.training import data, sharding
    from nnlc.training.problem import build_problem
    from nnlc.training.step import create_train_state, make_train_step

    workdir, _, _ = finished_run
    model = onnx.load(os.path.join(workdir, "original.onnx"))
    keep_gradient = optax.GradientTransformation(  # the optimizer state is the last gradient
        lambda params: jax.tree.map(jnp.zeros_like, params), lambda grads, state, params=None:
        (jax.tree.map(jnp.zeros_like, grads), grads))
    grads, metrics = {}, {}
    for groups in (0, 8):
        config = small_config(gradient_groups=groups)
        problem, params = build_problem(model, config, jax.random.key(0))
        mesh = sharding.data_mesh()
        batch = sharding.shard_batch(data.make_batch_source(config.inputs, model, config.batch_size)(0), mesh,
                                     config.batch_size)
        batch["constants"] = {"fixed_weights": problem.fixed_weights, "reference_weights": {}}
        step = jax.jit(make_train_step(problem, config, keep_gradient, mesh))
        state, metrics[groups] = step(create_train_state(params, keep_gradient), batch, jax.random.key(1))
        grads[groups] = state.opt_state
    assert float(metrics[8]["loss"]) == pytest.approx(float(metrics[0]["loss"]), rel=1e-5)
    assert float(metrics[8]["grad_norm"]) == pytest.approx(float(metrics[0]["grad_norm"]), rel=1e-4)
    for plain, grouped in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[8])):
        scale = float(np.max(np.abs(plain)))
        np.testing.assert_allclose(np.asarray(grouped), np.asarray(plain), rtol=1e-4, atol=1e-5 * scale)


def test_fixed_order_sum_is_a_pairwise_tree():
    from nnlc.training.step import fixed_order_sum

    values = np.array([1e8, 1.0, -1e8, 1.0, 0.5], np.float32)
    expected = np.float32(np.float32(np.float32(1e8) + 1) + np.float32(-1e8 + 1)) + np.float32(0.5)
    assert float(fixed_order_sum(values)) == float(expected)
    rows = np.random.default_rng(0).standard_normal((6, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(fixed_order_sum(rows), rows.sum(0), rtol=1e-6)


def test_gradient_groups_must_fit_the_batch_and_the_devices():
    from nnlc.training.step import gradient_groups

    assert gradient_groups(small_config(), 4) == 8
    assert gradient_groups(small_config(gradient_groups=0), 3) == 0
    assert gradient_groups(small_config(distortion="weights"), 3) == 0
    with pytest.raises(ValueError, match="not divisible by the device count 3"):
        gradient_groups(small_config(), 3)
    with pytest.raises(ValueError, match="batch_size 36 is not divisible"):
        gradient_groups(small_config(batch_size=36), 1)
    with pytest.raises(ValueError, match="time steps of one sequence"):
        gradient_groups(small_config(inputs="audio"), 1)


def test_rate_distortion_rounding_moves_ties_toward_the_likely_value():
    from nnlc.training.final_encode import rate_distortion_rounding

    latents = np.array([0.1, -0.2, 0.05, 0.0, 0.45, 0.55, 1.0, 2.49])
    nearest = np.rint(latents)
    rounded = rate_distortion_rounding(latents, tradeoff=0.5)
    assert rounded[4] == 0 and rounded[5] == 0  # both near 0.5: toward the frequent 0
    assert rounded[6] == 1 and rounded[7] in (2, 3)
    assert np.array_equal(rate_distortion_rounding(latents, tradeoff=0.0), nearest)
