"""Ablation on one shared network: global qp / allocation / + OPTQ (from calibrated_shared_models.json)
and + block-wise learned training, measured here from the smallest transparent OPTQ point.

    .venv/bin/python -m benchmarks.blockwise_ablation [--model mobilenet_v2] [--steps 100]

The first three rows are read from benchmarks/results/calibrated_shared_models.json (run
`benchmarks.calibrated_shared_models` first): each is the smallest bitstream transparent on the
benchmark inputs (nnlc.fidelity, DESIGN §6). The block-wise row starts from the OPTQ row's lambda
with the same calibration (256 train-split samples), trains every block (`nnlc.blockwise.train`),
encodes, decodes with the standalone decoder and measures the benchmark fidelity; it reports the
bytes, whether that is still transparent, the wall time of the block-wise stage and the peak RSS of
this process. Models come from ../shared/models (where each file comes from:
../shared/models/MANIFEST.md and benchmarks/fidelity_baselines.py).

Writes benchmarks/results/blockwise_ablation.json (merging per model).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.calibrated_shared_models import DEFAULT_MODELS_DIR, DEFAULT_OUTPUT, MODELS, _metrics
from nnlc import fidelity, onnx_io
from nnlc.decoder import decode_bitstream

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "benchmarks" / "results" / "blockwise_ablation.json"


def _row(bytes_: int, nncodec: int, **extra: Any) -> dict[str, Any]:
    return {"bytes": int(bytes_), "vs_nncodec": bytes_ / nncodec, **extra}


def run(name: str, models_dir: Path, steps: int, learning_rate: float, samples: int) -> dict[str, Any]:
    from nnlc.blockwise.train import BlockwiseOptions, refine, summary
    from nnlc.calibrated.api import calibrate
    from nnlc.calibrated.compress import CalibratedOptions
    from nnlc.calibration import CalibrationOptions

    calibrated = json.loads(DEFAULT_OUTPUT.read_text())["models"][name]
    file, source, kind, _ = MODELS[name]
    path = str(models_dir / file)
    nncodec = calibrated["nncodec"]["bytes"]
    judged = calibrated["benchmark_judged"]
    rows = {"global qp": _row(calibrated["global_qp"]["best"]["bytes"], nncodec, qp=calibrated["global_qp"]["best"]["qp"],
                              source="calibrated_shared_models.json"),
            "allocation": _row(judged["allocation"]["bytes"], nncodec, lmbda=judged["allocation"]["lmbda"],
                               source="calibrated_shared_models.json"),
            "+ OPTQ": _row(judged["optq"]["bytes"], nncodec, lmbda=judged["optq"]["lmbda"],
                           source="calibrated_shared_models.json")}
    started = time.perf_counter()
    calibrator = calibrate(onnx_io.load_model(path), source, CalibrationOptions(samples=samples),
                           CalibratedOptions(quiet=True))
    setup = time.perf_counter() - started
    point = calibrator.quantize(judged["optq"]["lmbda"])
    start_bytes = calibrator.encode(point).total_bytes
    print(f"{name}: OPTQ start {start_bytes} B at lambda {point.lmbda:.4g}; block-wise, {steps} steps per block",
          flush=True)
    started = time.perf_counter()
    refined, reports = refine(calibrator, point, BlockwiseOptions(steps=steps, learning_rate=learning_rate))
    seconds = time.perf_counter() - started
    encoded = calibrator.encode(refined)
    metrics = _metrics(fidelity.evaluate_fidelity(kind, path, decode_bitstream(encoded.bitstream).SerializeToString()))
    rows["+ block-wise learned"] = _row(
        encoded.total_bytes, nncodec, lmbda=point.lmbda, start_bytes=start_bytes, transparent=bool(metrics["transparent"]),
        benchmark_fidelity=metrics, holdout_fidelity={k: v for k, v in refined.fidelity.items()
                                                      if isinstance(v, (int, float, bool))},
        blockwise_seconds=seconds, calibration_seconds=setup, steps_per_block=steps, learning_rate=learning_rate,
        blocks=summary(reports), source="measured by this benchmark")
    rows["+ end-to-end"] = {"bytes": None, "note": "not run: the trainer needs an accelerator for a real network, "
                                                   "and none was lent"}
    print(json.dumps({k: {"bytes": v["bytes"], "vs_nncodec": v.get("vs_nncodec")} for k, v in rows.items()}), flush=True)
    return {"file": file, "kind": kind, "nncodec_bytes": nncodec, "rows": rows,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--model", default="mobilenet_v2", choices=sorted(MODELS))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results.update({"benchmark": "blockwise_ablation", "command": " ".join(sys.argv),
                    "machine": {"platform": platform.platform(), "python": platform.python_version()}})
    results.setdefault("models", {})[args.model] = run(args.model, args.models_dir, args.steps, args.learning_rate,
                                                       args.samples)
    args.output.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
