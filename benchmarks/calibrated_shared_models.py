"""Calibrated mode on the shared networks: smallest transparent bytes, three ways, next to NNCodec's.

    .venv/bin/python -m benchmarks.calibrated_shared_models [--models mobilenet_v2,...] [--samples 256]

Per network (../shared/models, or --models-dir; where each file comes from: benchmarks/fidelity_baselines.py
and ../shared/models/MANIFEST.md):
(a) one global qp (`nnlc compress --qp`, today's data-free mode): the coarsest qp whose decoded network is
    transparent on the benchmark inputs (binary search over qp; transparency is checked at every qp tried);
(b) `nnlc compress --calibrate=SOURCE --method=allocation --target=transparent` (equal-slope steps);
(c) `nnlc compress --calibrate=SOURCE --method=optq --target=transparent` (+ OPTQ error compensation).
Then, for (b) and (c), the same calibration but judged like (a) and NNCodec: the smallest bitstream
whose decoded network is transparent on the benchmark inputs (lambda search of nnlc.calibrated.target,
every point encoded, decoded and measured); "benchmark_judged" in the JSON.
(b) and (c) run as CLI subprocesses (wall time and peak RSS of the whole command, 2 onnxruntime threads);
their target is checked on the hold-out calibration split, and the benchmark then measures the decoded
network on its own fidelity inputs (nnlc.fidelity, DESIGN §6: held-out photos/clips/sentences, never
the calibration ones) and says whether the two agree.
NNCodec's smallest transparent bytes come from benchmarks/results/nncodec_shared_models.json at the qp
DESIGN.md §5 names (same fidelity criterion, same inputs).

Writes benchmarks/results/calibrated_shared_models.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx

from nnlc import encoder, fidelity, onnx_io
from nnlc.decoder import decode_bitstream

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS_DIR = REPO_ROOT.parent / "shared" / "models"
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "calibrated_shared_models.json"
NNCODEC_JSON = REPO_ROOT / "benchmarks" / "results" / "nncodec_shared_models.json"
# name: (file, calibration source, fidelity kind, NNCodec's transparent qp from DESIGN.md §5)
MODELS = {
    "mobilenet_v2": ("mobilenet_v2.onnx", "images", "classifier", -42),
    "silero_vad_16k_sequence": ("silero_vad_16k_sequence.onnx", "audio", "vad", -33),
    "silero_vad": ("silero_vad.onnx", "audio", "vad_stateful", -33),
    "minilm_l6_v2": ("minilm_l6_v2.onnx", "text", "embedding", -45),
}


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, bool, str))}


def nncodec_bytes(name: str, qp: int) -> int | None:
    if not NNCODEC_JSON.exists():
        return None
    runs = json.loads(NNCODEC_JSON.read_text())["models"].get(name, {}).get("runs", [])
    return next((run["bytes"] for run in runs if run["qp"] == qp), None)


def global_qp(model: onnx.ModelProto, path: str, kind: str, low: int = -60, high: int = -20) -> dict[str, Any]:
    """Coarsest transparent qp by binary search (qp grows coarser with its value)."""
    tried: dict[int, dict[str, Any]] = {}

    def check(qp: int) -> bool:
        started = time.perf_counter()
        result = encoder.compress_model(model, qp=qp)
        decoded = decode_bitstream(result.bitstream)
        metrics = fidelity.evaluate_fidelity(kind, path, decoded.SerializeToString())
        tried[qp] = {"bytes": result.total_bytes, "transparent": bool(metrics["transparent"]),
                     "fidelity": _metrics(metrics), "seconds": time.perf_counter() - started}
        print(f"  global qp {qp}: {result.total_bytes:,} B transparent={metrics['transparent']}", flush=True)
        return bool(metrics["transparent"])

    if not check(low):
        return {"best": None, "tried": tried}
    while high - low > 1:  # invariant: low passes, high fails (or is untested at the start)
        middle = (low + high) // 2
        if check(middle):
            low = middle
        else:
            high = middle
    return {"best": {"qp": low, **tried[low]}, "tried": {str(k): v for k, v in sorted(tried.items())}}


def calibrated_cli(path: str, source: str, method: str, samples: int, workdir: str) -> dict[str, Any]:
    """One `nnlc compress --calibrate` run in a subprocess: its report, wall time and peak RSS."""
    output, report = os.path.join(workdir, f"{method}.nnlc"), os.path.join(workdir, f"{method}.json")
    command = [sys.executable, "-m", "nnlc.cli", "compress", path, "-o", output, f"--calibrate={source}",
               f"--method={method}", "--target=transparent", f"--samples={samples}", f"--report={report}"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = []
    for line in process.stdout:
        log.append(line.rstrip())
        if "search points" in line or "done in" in line or "->" in line:
            print("   ", line.rstrip(), flush=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        return {"error": "\n".join(log[-5:]), "wall_s": wall}
    data = json.loads(Path(report).read_text())
    return {"bytes": data["bytes"], "lmbda": data["lmbda"], "holdout_fidelity": data["holdout_fidelity"],
            "calibration": data["calibration"], "search": data["search"], "tensor_status": data["tensor_status"],
            "seconds": data["seconds"], "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024.0,
            "command": " ".join(["nnlc"] + command[3:]), "bitstream": output}


def benchmark_judged(path: str, model: onnx.ModelProto, source: str, kind: str, samples: int, methods: list[str],
                     starts: dict[str, float]) -> dict[str, Any]:
    """Per method, the smallest bitstream transparent on the benchmark inputs (the protocol of (a) and NNCodec).

    One Calibrator (sensitivities, Hessians) serves every method; each rate point is encoded, decoded
    by the standalone decoder and measured with nnlc.fidelity; the search is `nnlc.calibrated.target`'s.
    """
    import dataclasses

    from nnlc.calibrated.api import calibrate
    from nnlc.calibrated.compress import CalibratedOptions
    from nnlc.calibrated.target import TargetNotReached, parse_target, search_lambda
    from nnlc.calibration import CalibrationOptions

    calibrator = calibrate(model, source, CalibrationOptions(samples=samples), CalibratedOptions(quiet=True))
    results: dict[str, Any] = {}
    for method in methods:
        calibrator.options = dataclasses.replace(calibrator.options, method=method)

        def evaluate(lmbda: float):
            point = calibrator.quantize(lmbda)
            encoded = calibrator.encode(point)
            decoded = decode_bitstream(encoded.bitstream)
            metrics = _metrics(fidelity.evaluate_fidelity(kind, path, decoded.SerializeToString()))
            metrics["holdout_transparent"] = bool(point.fidelity["transparent"])
            return 8.0 * encoded.total_bytes, metrics, None

        try:
            found = search_lambda(evaluate, parse_target("transparent"), starts.get(method, 1e-9), bisections=3,
                                  quiet=False, describe=lambda m: f"transparent={m['transparent']}")
            results[method] = {"bytes": int(found.best.bits / 8), "lmbda": found.best.lmbda,
                               "benchmark_fidelity": found.best.metrics, "points": found.table()}
        except TargetNotReached as error:
            results[method] = {"error": str(error)}
    return results


def run_model(name: str, models_dir: Path, samples: int, methods: list[str]) -> dict[str, Any]:
    file, source, kind, nncodec_qp = MODELS[name]
    path = str(models_dir / file)
    model = onnx_io.load_model(path)
    entry: dict[str, Any] = {"file": file, "kind": kind, "calibration_source": source,
                             "float32_bytes": sum(r.array.nbytes for r in onnx_io.find_float_tensors(model).values()),
                             "nncodec": {"qp": nncodec_qp, "bytes": nncodec_bytes(name, nncodec_qp)}}
    print(f"{name}: (a) global qp", flush=True)
    entry["global_qp"] = global_qp(model, path, kind)
    with tempfile.TemporaryDirectory() as workdir:
        for method in methods:
            print(f"{name}: ({'b' if method == 'allocation' else 'c'}) {method}", flush=True)
            run = calibrated_cli(path, source, method, samples, workdir)
            if "bitstream" in run:
                decoded = decode_bitstream(Path(run.pop("bitstream")).read_bytes())
                benchmark = fidelity.evaluate_fidelity(kind, path, decoded.SerializeToString())
                run["benchmark_fidelity"] = _metrics(benchmark)
                run["agrees"] = bool(benchmark["transparent"]) == bool(run["holdout_fidelity"]["transparent"])
                print(f"    benchmark inputs: transparent={benchmark['transparent']}", flush=True)
            entry[method] = run
    print(f"{name}: smallest bytes transparent on the benchmark inputs, per method", flush=True)
    starts = {m: entry[m]["lmbda"] for m in methods if "lmbda" in entry[m]}
    entry["benchmark_judged"] = benchmark_judged(path, model, source, kind, samples, methods, starts)
    reference = entry["nncodec"]["bytes"]
    if reference:
        best = entry["global_qp"]["best"]
        entry["vs_nncodec"] = {"global_qp": best["bytes"] / reference if best else None,
                               **{f"{m} (hold-out target)": entry[m]["bytes"] / reference
                                  for m in methods if "bytes" in entry[m]},
                               **{f"{m} (benchmark-judged)": entry["benchmark_judged"][m]["bytes"] / reference
                                  for m in methods if "bytes" in entry["benchmark_judged"][m]}}
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default="allocation,optq")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results.update({"benchmark": "calibrated_shared_models", "command": " ".join(sys.argv),
                    "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                "python": platform.python_version()},
                    "settings": {"samples": args.samples, "holdout_fraction": 0.25, "threads": 2,
                                 "target": "transparent (hold-out calibration split)",
                                 "benchmark_fidelity": "nnlc.fidelity defaults, split heldout, seed 0"}})
    results.setdefault("models", {})
    for name in args.models.split(","):
        if not (args.models_dir / MODELS[name][0]).exists():
            print(f"{name}: {args.models_dir / MODELS[name][0]} not found, skipped", flush=True)
            continue
        started = time.perf_counter()
        results["models"][name] = run_model(name, args.models_dir, args.samples, args.methods.split(","))
        results["models"][name]["benchmark_s"] = time.perf_counter() - started
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1, default=float))  # after every model: nothing lost
    print(json.dumps({k: v.get("vs_nncodec") for k, v in results["models"].items()}, indent=1))


if __name__ == "__main__":
    main()
