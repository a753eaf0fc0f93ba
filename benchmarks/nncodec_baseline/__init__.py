"""NNCodec 2.1.3 (the MPEG NNR reference codec) as a baseline, driven from nnlc's environment.

NNCodec needs ``numpy<2`` and nnlc needs ``numpy>=2`` (JAX), so NNCodec lives in its own venv,
``benchmarks/.venv-nncodec``, made by ``bash benchmarks/nncodec_baseline/setup_venv.sh``, and
is called through ``worker.py`` in a subprocess. This module imports neither torch nor nncodec.

    from benchmarks.nncodec_baseline import nncodec_available, run_nncodec, match_mse
    r = run_nncodec({"fc.weight": w}, qp=-38)            # one operating point
    m = match_mse(arrays, target_mse=1e-6)               # NNCodec bytes at nnlc's MSE

Conventions (DESIGN.md §5, §8):
- tensors with ndim > 1 are coded at ``qp``; 1-D tensors at ``nonweight_qp`` (-75 by default,
  NNCodec's ``nn.encode`` default); step size = ``(4 + (qp & 3)) * 2 ** ((qp >> 2) - 2)``.
- 0-d tensors are kept raw (NNCodec's scalar handling breaks Silero), and so are tensors holding
  inf/nan (NNCodec fails on them with "Prevention of integer-overflow failed!"). Raw tensors are
  charged 4 bytes per element in ``raw_bytes``; ``bytes`` = bitstream + raw.
- ``mse`` is over every element NNCodec quantized (both qp and nonweight_qp tensors);
  ``mse_weights`` over the ndim > 1 tensors only. Raw tensors come back bit-exact and are in
  neither.

The venv can be overridden with ``NNLC_NNCODEC_PYTHON=/path/to/python`` (a Python with numpy<2
and nncodec==2.1.3 installed).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "NNCodecError",
    "NNCodecUnavailable",
    "SETUP_SCRIPT",
    "VENV_DIR",
    "interp_bytes_at_mse",
    "match_mse",
    "nncodec_available",
    "nncodec_python",
    "qp_for_mse",
    "require_nncodec",
    "run_nncodec",
    "step_size",
]

_HERE = Path(__file__).resolve().parent
WORKER = _HERE / "worker.py"
SETUP_SCRIPT = _HERE / "setup_venv.sh"
VENV_DIR = _HERE.parent / ".venv-nncodec"
_SETUP_HINT = "bash benchmarks/nncodec_baseline/setup_venv.sh"


class NNCodecUnavailable(RuntimeError):
    """The NNCodec venv (or the python named by NNLC_NNCODEC_PYTHON) is missing or broken."""


class NNCodecError(RuntimeError):
    """NNCodec itself failed on this input; ``.result`` holds the worker's report."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


# ----------------------------------------------------------------------------- environment


def nncodec_python() -> Path:
    """The interpreter that runs the worker (NNLC_NNCODEC_PYTHON, else the venv's)."""
    override = os.environ.get("NNLC_NNCODEC_PYTHON")
    return Path(override) if override else VENV_DIR / "bin" / "python"


def _child_env() -> dict:
    env = dict(os.environ)
    for k in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(k, None)
    return env


_PROBED_OK: set[str] = set()  # only successes are cached: a venv made later is picked up


def _probe(python: str) -> tuple[bool, str]:
    if python in _PROBED_OK:
        return True, ""
    if not Path(python).exists():
        return False, f"{python} does not exist"
    try:
        p = subprocess.run(
            [python, "-c", "import numpy, nncodec.nnc_core, nncodec.extensions.deepCABAC; "
                           "assert int(numpy.__version__.split('.')[0]) < 2, numpy.__version__"],
            capture_output=True, text=True, timeout=120, env=_child_env(), cwd=tempfile.gettempdir(),
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{python}: {e}"
    if p.returncode != 0:
        return False, f"{python} cannot import nncodec.nnc_core: {p.stderr.strip()[-600:]}"
    _PROBED_OK.add(python)
    return True, ""


def nncodec_available() -> bool:
    """True when the NNCodec venv exists and imports ``nncodec.nnc_core`` with numpy<2."""
    return _probe(str(nncodec_python()))[0]


def require_nncodec() -> str:
    """Path of the worker's python; NNCodecUnavailable (naming setup_venv.sh) if unusable."""
    python = str(nncodec_python())
    ok, why = _probe(python)
    if not ok:
        raise NNCodecUnavailable(
            f"NNCodec baseline venv unusable ({why}). Create it with `{_SETUP_HINT}` "
            f"(makes {VENV_DIR.relative_to(_HERE.parent.parent)}), or point "
            "NNLC_NNCODEC_PYTHON at a python with numpy<2 and nncodec==2.1.3."
        )
    return python


# ----------------------------------------------------------------------------- quantizer math


def step_size(qp: int, qp_density: int = 2) -> float:
    """NNCodec's quantization step for an integer qp: qp -32 -> 2**-8 (qp_density 2)."""
    mul = (1 << qp_density) + (qp & ((1 << qp_density) - 1))
    return mul * 2.0 ** ((qp >> qp_density) - qp_density)


def qp_for_mse(target_mse: float, qp_density: int = 2) -> int:
    """Integer qp whose uniform-quantizer MSE (step**2 / 12) is nearest ``target_mse``.

    Only a starting point for :func:`match_mse`: dependent quantization lands elsewhere.
    """
    if not target_mse > 0:
        raise ValueError(f"target_mse must be > 0, got {target_mse}")
    best, best_d = 0, math.inf
    for qp in range(-160, 40):
        d = abs(math.log(step_size(qp, qp_density) ** 2 / 12.0) - math.log(target_mse))
        if d < best_d:
            best, best_d = qp, d
    return best


# ----------------------------------------------------------------------------- one run


def run_nncodec(
    arrays: Mapping[str, np.ndarray],
    qp: int,
    use_dq: bool = True,
    nonweight_qp: int | None = -75,
    *,
    raw_names: Iterable[str] = (),
    raw_0d: bool = True,
    raw_nonfinite: bool = True,
    raw_max_numel: int = 0,
    qp_per_tensor: Mapping[str, int] | None = None,
    opt_qp: bool = False,
    decode_repeats: int = 1,
    return_arrays: bool = True,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Encode ``arrays`` with NNCodec, decode, and measure.

    Args:
      arrays: name -> float array (cast to float32). Non-float arrays raise TypeError.
      qp: qp for tensors with ndim > 1.
      use_dq: dependent quantization (NNCodec's default, on).
      nonweight_qp: qp for 1-D tensors; None -> NNCodec's fallback ``qp - 8``.
      raw_names, raw_0d, raw_nonfinite, raw_max_numel: which tensors bypass NNCodec (see
        worker.py); they are charged ``4 * numel`` bytes and return bit-exact.
      qp_per_tensor, opt_qp: passed to NNCodec unchanged.
      decode_repeats: decode this many times and report the fastest as ``decode_s`` (all in
        ``decode_s_all``); the machine is shared, so single timings are noisy.
      return_arrays: include ``decoded`` (name -> float32 array) in the result.
      timeout: seconds for the subprocess (None: no limit).

    Returns a dict with ``bytes`` (bitstream + raw), ``bitstream_bytes``, ``raw_bytes``,
    ``params``, ``coded_params``, ``bits_per_param`` (8 * bytes / params), ``mse``,
    ``mse_weights``, ``max_abs_err``, ``per_tensor`` (name -> shape, numel, mse, max_abs_err,
    qp or raw reason), ``encode_s``, ``decode_s``, ``decode_s_all`` (wall clock),
    ``encode_cpu_s``, ``decode_cpu_s`` (worker CPU time; NNCodec is single-threaded),
    ``loadavg_1m`` (at the end of the worker run), ``wall_s``, ``qp``, ``use_dq``,
    ``nonweight_qp``, ``nncodec_version``, ``raw`` and (optionally) ``decoded``.

    Raises:
      NNCodecUnavailable: the venv is missing (run setup_venv.sh).
      NNCodecError: NNCodec failed on this input (``.result['traceback']`` has the details).
    """
    python = require_nncodec()
    names = list(arrays)
    if not names:
        raise ValueError("arrays is empty")
    originals = []
    for n in names:
        a = np.asarray(arrays[n])
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"{n}: dtype {a.dtype}; only float tensors can be given to NNCodec")
        originals.append(np.array(a, dtype=np.float32, order="C"))  # keeps 0-d as 0-d
    args = {
        "names": names,
        "qp": int(qp),
        "use_dq": bool(use_dq),
        "nonweight_qp": None if nonweight_qp is None else int(nonweight_qp),
        "raw_names": list(raw_names),
        "raw_0d": bool(raw_0d),
        "raw_nonfinite": bool(raw_nonfinite),
        "raw_max_numel": int(raw_max_numel),
        "qp_per_tensor": None if qp_per_tensor is None else {k: int(v) for k, v in qp_per_tensor.items()},
        "opt_qp": bool(opt_qp),
        "decode_repeats": int(decode_repeats),
    }
    with tempfile.TemporaryDirectory(prefix="nncodec_") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "in.npz", **{f"arr_{i}": a for i, a in enumerate(originals)})
        (tmp / "args.json").write_text(json.dumps(args))
        t0 = time.perf_counter()
        try:
            p = subprocess.run(
                [python, str(WORKER), str(tmp / "in.npz"), str(tmp / "args.json"), str(tmp / "out")],
                capture_output=True, text=True, timeout=timeout, env=_child_env(), cwd=tmp,
            )
        except subprocess.TimeoutExpired as e:
            raise NNCodecError(f"NNCodec worker timed out after {timeout} s (qp {qp})") from e
        wall = time.perf_counter() - t0
        rpath = tmp / "out" / "result.json"
        if not rpath.exists():
            raise NNCodecError(
                f"NNCodec worker died (rc {p.returncode}, qp {qp}) without a report:\n"
                f"{(p.stderr or p.stdout)[-2000:]}"
            )
        res = json.loads(rpath.read_text())
        if not res.get("ok"):
            raise NNCodecError(f"NNCodec failed at qp {qp}: {res.get('error')}", res)
        with np.load(tmp / "out" / "decoded.npz") as z:
            decoded = [z[f"arr_{i}"] for i in range(len(names))]

    raw = res["raw"]
    per_tensor: dict[str, dict] = {}
    sse = sse_w = 0.0
    n_coded = n_w = 0
    max_err = 0.0
    for n, a, d in zip(names, originals, decoded):
        entry: dict[str, Any] = {"shape": list(a.shape), "numel": int(a.size)}
        if n in raw:
            if not np.array_equal(a, d, equal_nan=True):
                raise NNCodecError(f"{n}: raw tensor did not come back bit-exact", res)
            entry.update(raw=raw[n]["reason"], mse=0.0, max_abs_err=0.0)
        else:
            err = d.astype(np.float64) - a.astype(np.float64)
            s = float(np.dot(err.ravel(), err.ravel()))
            m = float(np.max(np.abs(err))) if err.size else 0.0
            entry.update(qp=res["qp_used"].get(n), mse=s / max(a.size, 1), max_abs_err=m)
            sse += s
            n_coded += a.size
            max_err = max(max_err, m)
            if a.ndim > 1:
                sse_w += s
                n_w += a.size
        per_tensor[n] = entry

    params = int(sum(a.size for a in originals))
    total = int(res["total_bytes"])
    out: dict[str, Any] = {
        "qp": int(qp),
        "use_dq": bool(use_dq),
        "nonweight_qp": nonweight_qp,
        "bytes": total,
        "bitstream_bytes": int(res["bitstream_bytes"]),
        "raw_bytes": int(res["raw_bytes"]),
        "params": params,
        "coded_params": int(n_coded),
        "bits_per_param": 8.0 * total / params if params else float("nan"),
        "mse": sse / n_coded if n_coded else 0.0,
        "mse_weights": sse_w / n_w if n_w else float("nan"),
        "max_abs_err": max_err,
        "step": step_size(int(qp)),
        "encode_s": float(res["encode_s"]),
        "decode_s": float(res["decode_s"]),
        "decode_s_all": res.get("decode_s_all", [res["decode_s"]]),
        "encode_cpu_s": res.get("encode_cpu_s"),
        "decode_cpu_s": res.get("decode_cpu_s"),
        "loadavg_1m": res.get("loadavg_1m"),
        "wall_s": wall,
        "per_tensor": per_tensor,
        "raw": raw,
        "nncodec_version": res.get("nncodec_version"),
    }
    if return_arrays:
        out["decoded"] = dict(zip(names, decoded))
    return out


# ----------------------------------------------------------------------------- matched MSE


def interp_bytes_at_mse(points: Sequence[tuple[float, float]], target_mse: float,
                        extrapolate: bool = False) -> float:
    """Bytes at ``target_mse`` from (mse, bytes) points, linear in log(mse).

    Rate is close to linear in log(distortion) (about -0.5 * log2(MSE) bits per parameter), so
    two neighbouring operating points bracket the target well. Points are sorted by mse; the
    bracketing pair is used. Outside the range: ValueError unless ``extrapolate`` (then the end
    pair's line is used).
    """
    pts = sorted((float(m), float(b)) for m, b in points if m > 0 and math.isfinite(m))
    if len(pts) < 2:
        if len(pts) == 1 and pts[0][0] == target_mse:
            return pts[0][1]
        raise ValueError("need at least two points with mse > 0")
    if not target_mse > 0:
        raise ValueError(f"target_mse must be > 0, got {target_mse}")
    lt = math.log(target_mse)
    if not (pts[0][0] <= target_mse <= pts[-1][0]) and not extrapolate:
        raise ValueError(
            f"target mse {target_mse:.4g} outside [{pts[0][0]:.4g}, {pts[-1][0]:.4g}]"
        )
    for (m0, b0), (m1, b1) in zip(pts, pts[1:]):
        if m0 <= target_mse <= m1:
            break
    else:
        (m0, b0), (m1, b1) = (pts[0], pts[1]) if target_mse < pts[0][0] else (pts[-2], pts[-1])
    l0, l1 = math.log(m0), math.log(m1)
    if l1 == l0:
        return 0.5 * (b0 + b1)
    t = (lt - l0) / (l1 - l0)
    return b0 + t * (b1 - b0)


def match_mse(
    arrays: Mapping[str, np.ndarray],
    target_mse: float,
    *,
    key: str = "mse",
    start_qp: int | None = None,
    qp_min: int = -100,
    qp_max: int = 0,
    max_evals: int = 16,
    runner: Callable[..., dict] | None = None,
    **run_kwargs: Any,
) -> dict[str, Any]:
    """Find the adjacent integer qps whose ``key`` (default ``mse``) brackets ``target_mse``.

    Starts at ``start_qp`` (default :func:`qp_for_mse` of the target, corrected for DQ), then
    jumps by the quantizer's slope (MSE x4 per 4 qp: ``dqp = 2 * log2(target / mse)``) from the
    evaluated qp nearest the target, stepping one qp when the jump lands on a known qp, until two
    neighbours q, q+1 satisfy mse(q) <= target <= mse(q+1) (coarser qp -> larger MSE). Every
    evaluation is cached. A failure (NNCodecError, e.g. the integer-overflow one) closes the
    range beyond it; if the target lies beyond a failure, ValueError says so.

    Returns ``{"target_mse", "key", "fine": result at q, "coarse": result at q+1,
    "bytes_at_target", "bits_per_param_at_target", "qp_at_target" (fractional, same
    interpolation), "evaluated": {qp: summary or {"error": ...}}}``. Results carry no decoded
    arrays. Raises ValueError when no bracket is found in ``[qp_min, qp_max]`` within
    ``max_evals`` runs (the ``evaluated`` table is in the message).

    ``runner(arrays, qp, **run_kwargs) -> dict`` defaults to :func:`run_nncodec`; tests pass a
    fake one.
    """
    if not target_mse > 0:
        raise ValueError(f"target_mse must be > 0, got {target_mse}")
    run = runner or run_nncodec
    if runner is None:
        run_kwargs.setdefault("return_arrays", False)
    cache: dict[int, dict] = {}
    failed: dict[int, str] = {}
    lo, hi = int(qp_min), int(qp_max)  # qps still worth trying

    def fail(msg: str) -> ValueError:
        return ValueError(f"match_mse: {msg}; evaluated: {_summary(cache, failed, key)}")

    def bracket() -> int | None:
        for q in sorted(cache):
            if q + 1 in cache and cache[q][key] <= target_mse <= cache[q + 1][key]:
                return q
        return None

    if start_qp is None:
        # dependent quantization's MSE is ~2.8x step**2/12 (measured on Laplace weights, qp -32)
        dq = run_kwargs.get("use_dq", True)
        start_qp = qp_for_mse(target_mse / (2.8 if dq else 1.0))
    nxt = min(max(int(start_qp), lo), hi)
    while True:
        if len(cache) + len(failed) >= max_evals:
            raise fail(f"no bracket after {max_evals} runs")
        try:
            r = run(arrays, nxt, **run_kwargs)
            cache[nxt] = {k: v for k, v in r.items() if k != "decoded"}
        except NNCodecError as e:
            failed[nxt] = str(e)
            # a failure closes the range on the side away from the successes
            if any(q > nxt for q in cache) or not cache:
                lo = max(lo, nxt + 1)
            else:
                hi = min(hi, nxt - 1)
        fine_q = bracket()
        if fine_q is not None:
            break
        if not cache:
            if lo > hi:
                raise fail("every qp tried failed")
            nxt = lo  # the start failed: move toward the coarse side
            continue
        anchor = min(cache, key=lambda q: abs(math.log(max(cache[q][key], 1e-300) / target_mse)))
        m = cache[anchor][key]
        d = 1 if m <= target_mse else -1  # +1: need a coarser qp
        step = round(2.0 * math.log2(target_mse / max(m, 1e-300)))
        cand = anchor + (step if step * d > 0 else d)
        cand = min(max(cand, lo), hi)
        if cand == anchor or cand in cache or cand in failed:
            cand = anchor + d
        while cand in cache:  # non-monotone neighbours: go on past them
            cand += d
        if not lo <= cand <= hi or cand in failed:
            side = "finer" if d < 0 else "coarser"
            raise fail(f"target {target_mse:.4g} needs a {side} qp than {anchor}, "
                       f"but NNCodec fails or the range [{qp_min}, {qp_max}] ends there")
        nxt = cand
    fine, coarse = cache[fine_q], cache[fine_q + 1]
    pts = [(fine[key], fine["bytes"]), (coarse[key], coarse["bytes"])]
    b = interp_bytes_at_mse(pts, target_mse)
    qpt = interp_bytes_at_mse([(fine[key], fine_q), (coarse[key], fine_q + 1)], target_mse)
    params = fine.get("params") or coarse.get("params")
    return {
        "target_mse": float(target_mse),
        "key": key,
        "fine": fine,
        "coarse": coarse,
        "bytes_at_target": b,
        "bits_per_param_at_target": 8.0 * b / params if params else float("nan"),
        "qp_at_target": qpt,
        "evaluated": _summary(cache, failed, key),
    }


def _summary(cache: dict[int, dict], failed: dict[int, str], key: str) -> dict[int, dict]:
    out: dict[int, dict] = {q: {key: r[key], "bytes": r["bytes"]} for q, r in cache.items()}
    out.update({q: {"error": e} for q, e in failed.items()})
    return dict(sorted(out.items()))
