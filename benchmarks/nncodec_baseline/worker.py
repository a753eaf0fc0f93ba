"""NNCodec 2.1.3 encode/decode worker; runs INSIDE benchmarks/.venv-nncodec (numpy<2).

Do not import this from the project's environment: it imports ``nncodec.nnc_core`` and its
compiled ``deepCABAC`` extension, which only exist in the NNCodec venv made by
``benchmarks/nncodec_baseline/setup_venv.sh``. The project side is
``benchmarks.nncodec_baseline.run_nncodec``, which calls this as a subprocess.

Usage::

    python worker.py IN.npz ARGS.json OUT_DIR

``IN.npz`` holds ``arr_0 .. arr_{n-1}`` (float32); ``ARGS.json`` holds ``names`` (the tensor name
of each ``arr_i``, in order) and the coding options below. The worker writes
``OUT_DIR/result.json`` and ``OUT_DIR/decoded.npz`` (``arr_i`` again, same order, same shapes).
Exit status 0 on success; 2 with ``{"error": ..., "traceback": ...}`` in ``result.json`` when
NNCodec fails (e.g. its integer-overflow failure on some inputs).

Options in ARGS.json (defaults are those of ``nncodec.nn.encode``, so the bitstream is the one
``nncodec.nn.encode(dict, args={"qp": qp, "use_dq": use_dq, "nonweight_qp": ...})`` writes):

- ``qp`` (int, default -32): for tensors with ndim > 1 ("weight" in NNR terms). Step size is
  ``(4 + (qp & 3)) * 2 ** ((qp >> 2) - 2)`` at qp_density 2; qp -32 -> 2**-8.
- ``nonweight_qp`` (int or null, default -75): for 1-D tensors. null -> NNCodec's own
  fallback ``qp - 8`` (a quarter of the weight step).
- ``use_dq`` (bool, default true): dependent (trellis-coded) quantization.
- ``qp_density`` (2), ``opt_qp`` (false), ``param_opt`` (true), ``row_skipping`` (true),
  ``lambda_scale`` (0), ``cabac_unary_length_minus1`` (10), ``qp_per_tensor`` (null or
  ``{name: qp}``).
- ``raw_names`` (list): tensors NOT given to NNCodec; they are passed through bit-exactly and
  charged ``4 * numel`` bytes (float32) in ``raw_bytes``.
- ``raw_0d`` (bool, default true): keep every 0-d tensor raw. DESIGN.md §5: NNCodec's own
  handling of scalars (it reshapes them to (1,) and codes them at nonweight_qp) breaks Silero's
  ``Pow`` exponent 2.0.
- ``raw_nonfinite`` (bool, default true): keep tensors holding inf/nan raw (NNCodec cannot
  quantize them; MiniLM's attention-mask constants are -inf).
- ``raw_max_numel`` (int, default 0): also keep raw every tensor with numel <= this.
- ``decode_repeats`` (int, default 1): decode this many times; ``decode_s`` is the fastest
  (the machine is shared), ``decode_s_all`` lists them all.

Timings: ``encode_s`` / ``decode_s`` are wall clock; ``encode_cpu_s`` / ``decode_cpu_s`` are this
process's CPU time (NNCodec is single-threaded, so on a busy machine CPU time is the steadier
figure).

``bitstream_bytes`` counts NNCodec's whole bitstream (NNR start/MPS/NDU units, tensor names and
shapes included). ``raw_bytes`` counts only the raw tensors' payload (no names, no shapes); the
honest total for a comparison is ``bitstream_bytes + raw_bytes`` (reported as ``total_bytes``).
"""

from __future__ import annotations

import copy
import io
import json
import os
import sys
import time
import traceback
from contextlib import redirect_stdout

import numpy as np

DEFAULTS = {
    "qp": -32,
    "nonweight_qp": -75,
    "use_dq": True,
    "qp_density": 2,
    "opt_qp": False,
    "param_opt": True,
    "row_skipping": True,
    "lambda_scale": 0,
    "cabac_unary_length_minus1": 10,
    "qp_per_tensor": None,
    "raw_names": [],
    "raw_0d": True,
    "raw_nonfinite": True,
    "raw_max_numel": 0,
    "decode_repeats": 1,
}


def nnc_encode(params: dict, opts: dict) -> tuple[bytearray, dict]:
    """The body of ``nncodec.nnc.compress`` with ``nncodec.nn.encode``'s defaults, torch-free.

    Returns the bitstream and the per-tensor qp NNCodec actually used (it clips qp to avoid
    int32 overflow and says so only on stdout).
    """
    from nncodec import nnc_core

    nnc_mdl = nnc_core.nnr_model.NNRModel(params)
    approx_data = nnc_core.approximator.init_approx_data(
        params, nnc_mdl.model_info, qp_density=opts["qp_density"], scan_order=0
    )
    approx_info = nnc_core.approximator.ApproxInfo(
        approx_data,
        nnc_mdl.model_info,
        "uniform",
        0,  # codebook_mode
        opts["qp"],
        opts["opt_qp"],
        not opts["use_dq"],
        opts["cabac_unary_length_minus1"],
        opts["lambda_scale"],
        nonweight_qp=opts["nonweight_qp"],
        qp_per_tensor=opts["qp_per_tensor"],
        int_quant_bw=None,
    ).approx_info
    enc_info = {
        "cabac_unary_length_minus1": opts["cabac_unary_length_minus1"],
        "param_opt_flag": opts["param_opt"],
        "partial_data_counter": 0,
        "general_profile_idc": 1,
        "node_id_present_flag": 1,
        "device_id": 0,
        "mps_parent_signalling_enabled_flag": 0,
        "parent_node_id_present_flag": 0,
        "temporal_context_modeling_flag": 0,
        "row_skip_enabled_flag": 1 if opts["row_skipping"] else 0,
        "pre_signalling": 0,
    }
    approx_enc = nnc_core.approximator.approx(approx_info, nnc_mdl.model_info, approx_data, enc_info)
    qp_used = {k: int(v) for k, v in approx_enc["qp"].items()}
    bitstream, _ = nnc_core.coder.encode(
        enc_info=enc_info,
        model_info=nnc_mdl.model_info,
        approx_data=approx_enc,
        approx_param_base=None,
        update_base_param=False,
        tool_if=None,
    )
    return bitstream, qp_used


def nnc_decode(bitstream: bytearray) -> dict:
    """The body of ``nncodec.nnc.decompress`` (no LSA/BNF/base model), torch-free."""
    from nncodec import nnc_core

    dec_model_info = {
        "parameter_type": {},
        "parameter_dimensions": {},
        "parameter_index": {},
        "block_identifier": {},
        "topology_storage_format": None,
        "topology_compression_format": None,
        "performance_maps": {"mps": {}, "lps": {}},
        "performance_map_flags": {
            k: {}
            for k in (
                "mps_sparsification_flag", "lps_sparsification_flag",
                "mps_pruning_flag", "lps_pruning_flag",
                "mps_unification_flag", "lps_unification_flag",
                "mps_decomposition_performance_map_flag",
                "lps_decomposition_performance_map_flag",
            )
        },
    }
    dec = nnc_core.coder.decode(
        bytearray(bitstream), dec_model_info, hls_stats={}, oob_dict={},
        approx_param_base=None, update_base_param=False, return_hls=False, tool_if=None,
    )
    nnc_core.approximator.rec(dec)
    dec = nnc_core.approximator.recompose_params(dec_model_info, dec)
    return dec["parameters"]


def split_raw(names, arrays, opts):
    """Returns (coded: dict name -> array, raw: dict name -> (array, reason))."""
    explicit = set(opts["raw_names"])
    coded, raw = {}, {}
    for name, a in zip(names, arrays):
        if name in explicit:
            raw[name] = (a, "raw_names")
        elif opts["raw_0d"] and a.ndim == 0:
            raw[name] = (a, "0-d")
        elif opts["raw_nonfinite"] and not np.all(np.isfinite(a)):
            raw[name] = (a, "non-finite")
        elif a.size <= opts["raw_max_numel"]:
            raw[name] = (a, "small")
        elif a.size == 0:
            raw[name] = (a, "empty")
        else:
            coded[name] = np.array(a, dtype=np.float32, order="C")  # keeps 0-d as 0-d
    return coded, raw


def main(argv: list[str]) -> int:
    in_npz, args_json, out_dir = argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    result_path = os.path.join(out_dir, "result.json")
    log = io.StringIO()
    try:
        with open(args_json) as f:
            args = json.load(f)
        opts = {**DEFAULTS, **{k: v for k, v in args.items() if k in DEFAULTS}}
        names = list(args["names"])
        with np.load(in_npz) as z:
            arrays = [z[f"arr_{i}"] for i in range(len(names))]
        for n, a in zip(names, arrays):
            if a.dtype != np.float32:
                raise TypeError(f"{n}: dtype {a.dtype}, only float32 is supported")
        coded, raw = split_raw(names, arrays, opts)
        if not coded:
            raise ValueError("no tensor left for NNCodec to code (all raw)")

        with redirect_stdout(log):
            t0, c0 = time.perf_counter(), time.process_time()
            bitstream, qp_used = nnc_encode(copy.copy(coded), opts)
            t1, c1 = time.perf_counter(), time.process_time()
            decode_times, decode_cpu = [], []
            for _ in range(max(1, int(opts["decode_repeats"]))):
                t, c = time.perf_counter(), time.process_time()
                decoded = nnc_decode(bytearray(bitstream))
                decode_times.append(time.perf_counter() - t)
                decode_cpu.append(time.process_time() - c)

        if set(decoded) != set(coded):
            raise RuntimeError(
                f"decoded names differ: missing {sorted(set(coded) - set(decoded))[:5]}, "
                f"extra {sorted(set(decoded) - set(coded))[:5]}"
            )
        out = []
        for n, a in zip(names, arrays):
            if n in raw:
                out.append(a)
            else:
                d = np.asarray(decoded[n], dtype=np.float32)
                if d.size != a.size:
                    raise RuntimeError(f"{n}: decoded {d.shape} vs original {a.shape}")
                out.append(d.reshape(a.shape))
        np.savez(os.path.join(out_dir, "decoded.npz"), **{f"arr_{i}": x for i, x in enumerate(out)})
        import nncodec  # noqa: F401  (version for the record)
        try:
            from importlib.metadata import version
            nnc_version = version("nncodec")
        except Exception:  # pragma: no cover
            nnc_version = "unknown"
        raw_bytes = int(sum(4 * a.size for a, _ in raw.values()))
        result = {
            "ok": True,
            "bitstream_bytes": len(bitstream),
            "raw_bytes": raw_bytes,
            "total_bytes": len(bitstream) + raw_bytes,
            "encode_s": t1 - t0,
            "encode_cpu_s": c1 - c0,
            "decode_cpu_s": min(decode_cpu),
            "decode_s": min(decode_times),
            "decode_s_all": decode_times,
            "loadavg_1m": os.getloadavg()[0],
            "coded_names": list(coded),
            "raw": {n: {"reason": r, "numel": int(a.size), "shape": list(a.shape)}
                    for n, (a, r) in raw.items()},
            "qp_used": qp_used,
            "options": {k: opts[k] for k in DEFAULTS},
            "nncodec_version": nnc_version,
            "numpy_version": np.__version__,
            "log_tail": log.getvalue()[-4000:],
        }
        with open(result_path, "w") as f:
            json.dump(result, f)
        return 0
    except BaseException as e:  # NNCodec raises SystemExit on bad input
        if isinstance(e, KeyboardInterrupt):
            raise
        with open(result_path, "w") as f:
            json.dump({
                "ok": False,
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(),
                "log_tail": log.getvalue()[-4000:],
            }, f)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
