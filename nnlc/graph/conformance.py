"""Runs ONNX's backend test suite (node tests and the small 'light' models) against `JaxBackend`.

Node tests come from `onnx.backend.test` (generated in memory from the operator test cases shipped
in the onnx package); each is compared with ONNX's own `Runner.assert_similar_outputs` at the
tolerances the suite sets. A test counts as *supported* when every operator it uses is in the
registry; the others are skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np
import onnx
from onnx import numpy_helper

from nnlc.graph.backend import JaxBackend
from nnlc.graph.registry import lookup

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
_ONNX_TEST_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test")
LIGHT_DIR = os.path.join(_ONNX_TEST_DIR, "data", "light")
_REAL_DIR = os.path.join(_ONNX_TEST_DIR, "data", "real")


@dataclasses.dataclass
class Outcome:
    name: str
    status: str
    seconds: float
    message: str = ""


def _graph_ops(graph: onnx.GraphProto) -> Iterator[tuple[str, str]]:
    for node in graph.node:
        yield node.domain, node.op_type
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graph_ops(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graph_ops(subgraph)


def unsupported_ops(model: onnx.ModelProto) -> set[str]:
    return {op for domain, op in _graph_ops(model.graph) if lookup(op, domain) is None}


@functools.cache
def node_test_cases() -> dict[str, Any]:
    """ONNX's node test cases by name (`test_<op>_<variant>`)."""
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return {case.name: case for case in load_model_tests(kind="node")}


def light_model_names() -> list[str]:
    if not os.path.isdir(LIGHT_DIR):
        return []
    return sorted(f[len("light_"):-len(".onnx")] for f in os.listdir(LIGHT_DIR)
                  if f.startswith("light_") and f.endswith(".onnx"))


def _assert_similar(expected: list[np.ndarray], actual: Iterable[np.ndarray], rtol: float, atol: float) -> None:
    from onnx.backend.test.runner import Runner

    Runner.assert_similar_outputs(expected, list(actual), rtol=rtol, atol=atol)


def _as_array(value: Any) -> Any:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def run_node_test(name: str) -> Outcome:
    """Runs one node test: skipped when it uses an unsupported op or non-tensor values."""
    case = node_test_cases()[name]
    start = time.perf_counter()
    missing = unsupported_ops(case.model)
    if missing:
        return Outcome(name, SKIPPED, 0.0, f"unsupported ops: {', '.join(sorted(missing))}")
    try:
        prepared = JaxBackend.prepare(case.model)
        for inputs, outputs in case.data_sets:
            inputs = [_as_array(v) for v in inputs]
            if any(isinstance(v, (list, dict)) or v is None for v in inputs):
                return Outcome(name, SKIPPED, 0.0, "sequence or optional inputs")
            if any(np.asarray(v).dtype.kind in "OSU" for v in inputs):
                return Outcome(name, SKIPPED, 0.0, "string tensors (JAX has no string arrays)")
            actual = prepared.run(inputs)
            _assert_similar([_as_array(v) for v in outputs], actual, case.rtol, case.atol)
    except Exception as error:  # noqa: BLE001  (any failure is a failed test, with its message)
        message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return Outcome(name, FAILED, time.perf_counter() - start, message[:300])
    return Outcome(name, PASSED, time.perf_counter() - start)


def _light_tolerances(model_name: str) -> tuple[float, float]:
    import json

    path = os.path.join(_REAL_DIR, f"test_{model_name}", "data.json")
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
        return data.get("rtol", 1e-3), data.get("atol", 1e-7)
    return 1e-3, 1e-7


def run_light_test(model_name: str) -> Outcome:
    """A light model on ONNX's dummy input (arange / size), against the stored expected output."""
    from onnx.backend.test.runner import Runner

    name = f"light_{model_name}"
    start = time.perf_counter()
    model = onnx.load(os.path.join(LIGHT_DIR, f"{name}.onnx"))
    missing = unsupported_ops(model)
    if missing:
        return Outcome(name, SKIPPED, 0.0, f"unsupported ops: {', '.join(sorted(missing))}")
    expected_path = os.path.join(LIGHT_DIR, f"{name}_output_0.pb")
    try:
        initializers = {i.name for i in model.graph.initializer}
        inputs = [Runner.generate_dummy_data(i, seed=0, name=model_name, random=False)
                  for i in model.graph.input if i.name not in initializers]
        expected = [numpy_helper.to_array(onnx.load_tensor(expected_path))]
        rtol, atol = _light_tolerances(model_name)
        _assert_similar(expected, JaxBackend.prepare(model).run(inputs), rtol, atol)
    except Exception as error:  # noqa: BLE001
        return Outcome(name, FAILED, time.perf_counter() - start, f"{type(error).__name__}: {error}"[:300])
    return Outcome(name, PASSED, time.perf_counter() - start)


def _node_test_jobs(name: str) -> tuple[list[tuple], Outcome | None]:
    """(rep, call, weights, traced inputs, expected outputs) per data set, or an outcome that ends the test."""
    case = node_test_cases()[name]
    missing = unsupported_ops(case.model)
    if missing:
        return [], Outcome(name, SKIPPED, 0.0, f"unsupported ops: {', '.join(sorted(missing))}")
    jobs = []
    for inputs, outputs in case.data_sets:
        inputs = [_as_array(v) for v in inputs]
        if any(isinstance(v, (list, dict)) or v is None for v in inputs):
            return [], Outcome(name, SKIPPED, 0.0, "sequence or optional inputs")
        if any(np.asarray(v).dtype.kind in "OSU" for v in inputs):
            return [], Outcome(name, SKIPPED, 0.0, "string tensors (JAX has no string arrays)")
        jobs.append((inputs, [_as_array(v) for v in outputs]))
    try:
        prepared = JaxBackend.prepare(case.model)
        return [(prepared, *prepared.split_call(inputs), expected) for inputs, expected in jobs], None
    except Exception:  # noqa: BLE001  (reported by the individual run)
        return [], run_node_test(name)


def _run_group(names: list[str]) -> list[Outcome]:
    """Runs several node tests in one jit-compiled program (compiling is most of a test's time);
    any test that fails or errs there is run again on its own, which decides its outcome."""
    start = time.perf_counter()
    outcomes: dict[str, Outcome] = {}
    jobs: list[tuple[str, tuple]] = []
    for name in names:
        test_jobs, outcome = _node_test_jobs(name)
        if outcome is not None:
            outcomes[name] = outcome
        jobs.extend((name, job) for job in test_jobs)
    results = None
    if jobs:
        def all_calls(weights: list, traced: list) -> list:
            return [job[1](w, t) for (_, job), w, t in zip(jobs, weights, traced)]

        try:
            results = jax.jit(all_calls)([job[2] for _, job in jobs], [job[3] for _, job in jobs])
        except Exception:  # noqa: BLE001
            results = None
    failed = set()
    for index, (name, (prepared, _, _, _, expected)) in enumerate(jobs):
        if results is None:
            failed.add(name)
            continue
        case = node_test_cases()[name]
        try:
            _assert_similar(expected, prepared.finish(results[index]), case.rtol, case.atol)
        except Exception:  # noqa: BLE001
            failed.add(name)
    seconds = (time.perf_counter() - start) / max(len(names), 1)
    for name in names:
        if name not in outcomes:
            outcomes[name] = run_node_test(name) if name in failed else Outcome(name, PASSED, seconds)
    return [outcomes[name] for name in names]


def run_node_tests(names: Iterable[str] | None = None, group_size: int = 16) -> list[Outcome]:
    """Runs the named node tests (all by default) with 64-bit types enabled, as ONNX's data needs.

    `group_size` tests share one compiled program (see `_run_group`); 1 runs each on its own.
    """
    names = sorted(node_test_cases()) if names is None else list(names)
    unknown = [name for name in names if name not in node_test_cases()]
    names = [name for name in names if name in node_test_cases()]
    with jax.enable_x64(True), warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if group_size <= 1:
            return [run_node_test(name) for name in names] + \
                [Outcome(name, SKIPPED, 0.0, f"not in onnx {onnx.__version__}'s test suite") for name in unknown]
        outcomes = [Outcome(name, SKIPPED, 0.0, f"not in onnx {onnx.__version__}'s test suite") for name in unknown]
        for begin in range(0, len(names), group_size):
            outcomes.extend(_run_group(names[begin:begin + group_size]))
        return outcomes


def run_light_tests(names: Iterable[str] | None = None) -> list[Outcome]:
    """The light models (all by default) on ONNX's dummy inputs, 64-bit types enabled."""
    names = light_model_names() if names is None else list(names)
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [run_light_test(name) for name in names]


def summarize(outcomes: Iterable[Outcome]) -> dict[str, int]:
    counts = {PASSED: 0, FAILED: 0, SKIPPED: 0}
    for outcome in outcomes:
        counts[outcome.status] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    """`python -m nnlc.graph.conformance [--names FILE] [--output JSON]`: runs node tests, prints counts."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", help="file with one node test name per line (default: all)")
    parser.add_argument("--output", help="write every outcome to this JSON file")
    args = parser.parse_args(argv)
    names = None
    if args.names:
        with open(args.names) as f:
            names = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    outcomes = run_node_tests(names)
    if args.output:
        with open(args.output, "w") as f:
            json.dump([dataclasses.asdict(o) for o in outcomes], f, indent=1)
    print(json.dumps(summarize(outcomes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
