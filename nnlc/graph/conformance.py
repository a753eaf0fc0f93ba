"""Runs ONNX's backend test suite (node tests and the small 'light' models) against `JaxBackend`.

Node tests come from `onnx.backend.test` (generated in memory from the operator test cases shipped
in the onnx package); each is compared with ONNX's own `Runner.assert_similar_outputs` at the
tolerances the suite sets. A test counts as *supported* when every operator it uses is in the
registry; the others are skipped.

One kind of expected value is not compared: ONNX's Cast spec leaves float -> integer casts of
out-of-range values (and of NaN / +-inf) undefined, and the suite's expected outputs for them are
whatever numpy's `astype` gives on the machine that loads the tests (for the 2-/4-bit types it
differs between machines, x86-64 ones included). In those tests (`cast_test_notes`) only the
elements whose input truncates to a value of the target type are compared; nnlc's own answer for
the others is tested in tests/test_graph_ops.py.
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
import jax.numpy as jnp
import ml_dtypes
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


def undefined_cast_elements(model: onnx.ModelProto, inputs: list, outputs: list) -> list[np.ndarray | None]:
    """Per expected output, True where the ONNX spec leaves its value undefined (None: nowhere).

    Only a model that just casts (Cast / CastLike nodes) a float tensor to an integer tensor of the
    same shape has such elements: Cast's spec says "Casting from floating point to [...] fixed
    point: undefined if OOR". An element is defined when its input is finite and its integral part
    (C's conversion truncates toward zero) lies in the target type's range.
    """
    ops = {node.op_type for node in model.graph.node} - {"Constant"}
    if not ops or not ops <= {"Cast", "CastLike"} or not inputs:
        return [None] * len(outputs)
    x = np.asarray(inputs[0])
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return [None] * len(outputs)
    masks: list[np.ndarray | None] = []
    for output in outputs:
        output = np.asarray(output)
        if output.shape != x.shape or not jnp.issubdtype(output.dtype, jnp.integer):
            masks.append(None)
            continue
        info = ml_dtypes.iinfo(output.dtype)
        with np.errstate(invalid="ignore"):
            whole = np.trunc(x.astype(np.float64))
            defined = np.isfinite(whole) & (whole >= int(info.min)) & (whole <= int(info.max))
        masks.append(None if defined.all() else ~defined)
    return masks


def _without(array: Any, undefined: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array[undefined] = np.zeros((), array.dtype)
    return array


def _assert_similar(expected: list[np.ndarray], actual: Iterable[np.ndarray], rtol: float, atol: float,
                    undefined: list[np.ndarray | None] | None = None) -> None:
    """ONNX's comparison, after setting the elements `undefined` marks to 0 in both outputs."""
    from onnx.backend.test.runner import Runner

    expected, actual = list(expected), list(actual)
    for i, mask in enumerate(undefined or []):
        if mask is not None and i < len(actual) and np.shape(actual[i]) == mask.shape:
            expected[i], actual[i] = _without(expected[i], mask), _without(actual[i], mask)
    Runner.assert_similar_outputs(expected, actual, rtol=rtol, atol=atol)


def _undefined_note(masks_per_data_set: list[list[np.ndarray | None]]) -> str:
    masks = [m for masks in masks_per_data_set for m in masks if m is not None]
    if not masks:
        return ""
    skipped, total = sum(int(m.sum()) for m in masks), sum(m.size for m in masks)
    return (f"compared {total - skipped} of {total} output elements: the Cast spec leaves float -> integer "
            "casts of out-of-range, NaN and inf inputs undefined")


def cast_test_notes(names: Iterable[str] | None = None) -> dict[str, str]:
    """The node tests compared on part of their output only (see the module docstring), with why."""
    notes = {}
    for name in sorted(node_test_cases()) if names is None else names:
        case = node_test_cases().get(name)
        if case is None or unsupported_ops(case.model):
            continue
        try:
            masks = [undefined_cast_elements(case.model, [_as_array(v) for v in inputs],
                                             [_as_array(v) for v in outputs]) for inputs, outputs in case.data_sets]
        except Exception:  # noqa: BLE001  (sequence inputs and the like: nothing to note)
            continue
        note = _undefined_note(masks)
        if note:
            notes[name] = note
    return notes


def _as_array(value: Any) -> Any:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def run_node_test(name: str) -> Outcome:
    """Runs one node test: skipped when it uses an unsupported op or non-tensor values."""
    case = node_test_cases()[name]
    start = time.perf_counter()
    missing = unsupported_ops(case.model)
    if missing:
        return Outcome(name, SKIPPED, 0.0, f"unsupported ops: {', '.join(sorted(missing))}")
    all_undefined = []
    try:
        prepared = JaxBackend.prepare(case.model)
        for inputs, outputs in case.data_sets:
            inputs = [_as_array(v) for v in inputs]
            if any(isinstance(v, (list, dict)) or v is None for v in inputs):
                return Outcome(name, SKIPPED, 0.0, "sequence or optional inputs")
            if any(np.asarray(v).dtype.kind in "OSU" for v in inputs):
                return Outcome(name, SKIPPED, 0.0, "string tensors (JAX has no string arrays)")
            actual = prepared.run(inputs)
            expected = [_as_array(v) for v in outputs]
            all_undefined.append(undefined_cast_elements(case.model, inputs, expected))
            _assert_similar(expected, actual, case.rtol, case.atol, all_undefined[-1])
    except Exception as error:  # noqa: BLE001  (any failure is a failed test, with its message)
        message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return Outcome(name, FAILED, time.perf_counter() - start, message[:300])
    return Outcome(name, PASSED, time.perf_counter() - start, _undefined_note(all_undefined))


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
    """(rep, call, weights, traced inputs, expected outputs, undefined elements) per data set, or an
    outcome that ends the test."""
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
        expected = [_as_array(v) for v in outputs]
        jobs.append((inputs, expected, undefined_cast_elements(case.model, inputs, expected)))
    try:
        prepared = JaxBackend.prepare(case.model)
        return [(prepared, *prepared.split_call(inputs), expected, undefined)
                for inputs, expected, undefined in jobs], None
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
    undefined_by_test: dict[str, list] = {}
    for index, (name, (prepared, _, _, _, expected, undefined)) in enumerate(jobs):
        undefined_by_test.setdefault(name, []).append(undefined)
        if results is None:
            failed.add(name)
            continue
        case = node_test_cases()[name]
        try:
            _assert_similar(expected, prepared.finish(results[index]), case.rtol, case.atol, undefined)
        except Exception:  # noqa: BLE001
            failed.add(name)
    seconds = (time.perf_counter() - start) / max(len(names), 1)
    for name in names:
        if name not in outcomes:
            outcomes[name] = run_node_test(name) if name in failed else \
                Outcome(name, PASSED, seconds, _undefined_note(undefined_by_test.get(name, [])))
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
