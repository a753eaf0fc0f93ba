"""ONNX's own backend tests on nnlc.graph: once-passing node tests must keep passing.

tests/data/onnx_backend_passing.txt lists the node tests that passed when it was last written by
`python -m benchmarks.onnx_backend_conformance --write-passing`. They run in a subprocess (64-bit
types on, fast-compile XLA flags) so they leave this process's JAX configuration alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

from nnlc.graph import conformance
from nnlc.graph.backend import JaxBackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSING_LIST = os.path.join(ROOT, "tests", "data", "onnx_backend_passing.txt")
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def test_once_passing_node_tests_still_pass(tmp_path):
    output = tmp_path / "outcomes.json"
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAGS}".strip(),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-m", "nnlc.graph.conformance", "--names", PASSING_LIST, "--output", str(output)],
                   cwd=ROOT, env=env, check=True, timeout=1200, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    outcomes = json.loads(output.read_text())
    regressed = [o for o in outcomes if o["status"] == conformance.FAILED]
    assert not regressed, "regressed ONNX node tests:\n" + "\n".join(
        f"{o['name']}: {o['message']}" for o in regressed[:40])
    assert sum(o["status"] == conformance.PASSED for o in outcomes) > 1000


def test_backend_interface_runs_a_node():
    node = helper.make_node("Relu", ["x"], ["y"])
    x = np.array([[-1.0, 2.0]], np.float32)
    (y,) = JaxBackend.run_node(node, [x])
    np.testing.assert_array_equal(y, [[0.0, 2.0]])
    assert JaxBackend.supports_device("CPU")


def test_backend_reports_incompatible_models():
    model = helper.make_model(helper.make_graph([helper.make_node("MadeUpOp", ["x"], ["y"])], "g",
                                                [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                                [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    assert not JaxBackend.is_compatible(model)


@pytest.mark.parametrize("model_name", ["squeezenet", "zfnet512"])
def test_small_light_models(model_name):
    if model_name not in conformance.light_model_names():
        pytest.skip("this onnx wheel ships no light models")
    outcome = conformance.run_light_tests([model_name])[0]
    assert outcome.status == conformance.PASSED, outcome.message


@pytest.mark.slow
def test_all_light_models():
    outcomes = conformance.run_light_tests()
    failed = [o for o in outcomes if o.status != conformance.PASSED]
    assert outcomes and not failed, failed
