"""ONNX backend conformance of nnlc.graph: every node test of the onnx package, plus the light models.

    python -m benchmarks.onnx_backend_conformance [--write-passing] [--skip-light]

Needs nothing beyond the project's dependencies: the node tests are generated from the operator
test cases shipped inside the `onnx` wheel (`onnx.backend.test`), the light models (small ImageNet
CNNs with a stored expected output) are in `onnx/backend/test/data/light`.

Writes benchmarks/results/onnx_backend_conformance.json and the table in docs/graph.md (between the
`conformance` markers). With --write-passing, also rewrites tests/data/onnx_backend_passing.txt,
the list tests/test_graph_onnx_backend.py holds the implementation to.

A node test is *supported* when every operator it uses has an implementation; those are run and
pass or fail; supported tests with string / sequence inputs are counted as skipped. Tests using
other operators are listed as unsupported. XLA runs with the same fast-compile flags as the CI test.

Float -> integer Cast / CastLike tests whose inputs include out-of-range values (undefined by the
Cast spec; ONNX's expected values for them come from numpy on the loading machine and differ between
CPUs) are compared on their in-range elements only; they are listed under "compared_in_range_only".
"""

from __future__ import annotations

import os

FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE_FLAGS).strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import onnx  # noqa: E402

from nnlc.graph import conformance  # noqa: E402
from nnlc.graph.registry import supported_ops  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "onnx_backend_conformance.json")
PASSING_LIST = os.path.join(ROOT, "tests", "data", "onnx_backend_passing.txt")
DOCS = os.path.join(ROOT, "docs", "graph.md")
BEGIN, END = "<!-- conformance:begin -->", "<!-- conformance:end -->"


def _op_of_test(name: str) -> str:
    """The operators of a node test's model (an expanded test lists the ops of its function body)."""
    ops = sorted({node.op_type for node in conformance.node_test_cases()[name].model.graph.node} - {"Constant"})
    return "/".join(ops) if len(ops) <= 2 else re.sub(r"^test_", "", name).split("_")[0]


def run(include_light: bool) -> dict:
    start = time.perf_counter()
    outcomes = conformance.run_node_tests()
    unsupported = [o for o in outcomes if o.status == conformance.SKIPPED and o.message.startswith("unsupported ops")]
    supported = [o for o in outcomes if o not in unsupported]
    counts = conformance.summarize(supported)
    missing_ops = collections.Counter(op for o in unsupported for op in o.message.split(": ", 1)[1].split(", "))
    light = conformance.run_light_tests() if include_light else []
    return {
        "onnx_version": onnx.__version__, "jax_version": jax.__version__, "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "xla_flags": FAST_COMPILE_FLAGS, "seconds": round(time.perf_counter() - start, 1),
        "node_tests": {
            "total": len(outcomes),
            "supported": counts,
            "supported_pass_rate": round(counts["passed"] / max(counts["passed"] + counts["failed"], 1), 4),
            "unsupported": len(unsupported),
        },
        "light_models": {o.name: {"status": o.status, "seconds": round(o.seconds, 1), "message": o.message}
                         for o in light},
        "light_counts": conformance.summarize(light),
        "failed": {o.name: o.message for o in supported if o.status == conformance.FAILED},
        "skipped_supported": {o.name: o.message for o in supported if o.status == conformance.SKIPPED},
        "compared_in_range_only": conformance.cast_test_notes(
            o.name for o in supported if o.status != conformance.SKIPPED),
        "unsupported_ops_by_tests": dict(missing_ops.most_common()),
        "implemented_ops": supported_ops(),
        "passed": sorted(o.name for o in supported if o.status == conformance.PASSED),
    }


def markdown_table(results: dict) -> str:
    node = results["node_tests"]
    counts = node["supported"]
    light = results["light_counts"]
    lines = [
        f"Measured with onnx {results['onnx_version']}, jax {results['jax_version']} "
        f"(`python -m benchmarks.onnx_backend_conformance`).",
        "",
        "| Test set | Passed | Failed | Skipped |",
        "|---|---|---|---|",
        f"| Node tests whose ops are all implemented ({sum(counts.values())}) | {counts['passed']} "
        f"| {counts['failed']} | {counts['skipped']} |",
        f"| Light models ({sum(light.values())}) | {light['passed']} | {light['failed']} | {light['skipped']} |",
        "",
        f"Pass rate on supported node tests: {100 * node['supported_pass_rate']:.1f}% "
        f"(skipped = string or sequence inputs). {node['unsupported']} of {node['total']} node tests use "
        "operators nnlc.graph does not implement.",
        "",
        f"{len(results.get('compared_in_range_only', {}))} supported node tests (float -> integer Cast/CastLike) "
        "are compared only on the elements whose input is in the target type's range: the Cast spec leaves the "
        "others undefined, "
        "and ONNX's expected values for them depend on the CPU that generates them.",
        "",
        "Failing supported tests, by op: " + ", ".join(
            f"{op} ({n})" for op, n in collections.Counter(_op_of_test(t) for t in results["failed"]).most_common()),
    ]
    return "\n".join(lines)


def update_docs(table: str) -> None:
    if not os.path.exists(DOCS):
        return
    with open(DOCS) as f:
        text = f.read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        with open(DOCS, "w") as f:
            f.write(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-passing", action="store_true", help="rewrite tests/data/onnx_backend_passing.txt")
    parser.add_argument("--skip-light", action="store_true", help="skip the light model tests")
    args = parser.parse_args()
    results = run(include_light=not args.skip_light)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=1)
    if args.write_passing:
        with open(PASSING_LIST, "w") as f:
            f.write("# ONNX node tests nnlc.graph passes; tests/test_graph_onnx_backend.py fails if one regresses.\n")
            f.write("# Regenerate: python -m benchmarks.onnx_backend_conformance --write-passing\n")
            f.write("\n".join(results["passed"]) + "\n")
    table = markdown_table(results)
    update_docs(table)
    print(table)


if __name__ == "__main__":
    main()
