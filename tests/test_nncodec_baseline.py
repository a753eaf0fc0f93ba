"""The NNCodec baseline runner (benchmarks/nncodec_baseline).

The helpers (step size, matched-MSE search, log-linear interpolation) are tested everywhere; the
NNCodec round trip only where its venv exists (``bash benchmarks/nncodec_baseline/setup_venv.sh``):
CI has none, and those tests skip.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` under bare `pytest`
from benchmarks.nncodec_baseline import (
    NNCodecError,
    NNCodecUnavailable,
    interp_bytes_at_mse,
    match_mse,
    nncodec_available,
    qp_for_mse,
    run_nncodec,
    step_size,
)

needs_nncodec = pytest.mark.skipif(
    not nncodec_available(),
    reason="NNCodec venv absent (bash benchmarks/nncodec_baseline/setup_venv.sh)",
)


# ----------------------------------------------------------------------------- pure helpers


def test_step_size_matches_design_formula():
    for qp in range(-80, 8):
        assert step_size(qp) == (4 + (qp & 3)) * 2.0 ** ((qp >> 2) - 2)
    assert step_size(-32) == 2.0**-8
    assert step_size(-36) == 2.0**-9
    steps = [step_size(q) for q in range(-80, 8)]
    assert all(a < b for a, b in zip(steps, steps[1:]))


def test_qp_for_mse_inverts_uniform_quantizer_mse():
    for qp in (-48, -40, -32, -20):
        assert qp_for_mse(step_size(qp) ** 2 / 12.0) == qp


def test_interp_bytes_at_mse_is_linear_in_log_mse():
    pts = [(1e-6, 1000.0), (4e-6, 800.0)]
    assert interp_bytes_at_mse(pts, 2e-6) == pytest.approx(900.0)  # log-midpoint
    assert interp_bytes_at_mse(pts, 1e-6) == pytest.approx(1000.0)
    assert interp_bytes_at_mse(pts[::-1], 4e-6) == pytest.approx(800.0)
    with pytest.raises(ValueError):
        interp_bytes_at_mse(pts, 1e-5)
    assert interp_bytes_at_mse(pts, 8e-6, extrapolate=True) == pytest.approx(700.0)
    many = [(1e-7, 3000.0), (1e-6, 2000.0), (1e-5, 1000.0)]
    assert interp_bytes_at_mse(many, math.sqrt(1e-6 * 1e-5)) == pytest.approx(1500.0)


class _FakeCodec:
    """Rate-distortion of an ideal uniform quantizer: mse = step**2/12, bits = -log2(step) + c."""

    def __init__(self, fail_below: int | None = None):
        self.calls: list[int] = []
        self.fail_below = fail_below

    def __call__(self, arrays, qp, **kw):
        self.calls.append(qp)
        if self.fail_below is not None and qp < self.fail_below:
            raise NNCodecError(f"Prevention of integer-overflow failed! (qp {qp})")
        params = sum(np.asarray(a).size for a in arrays.values())
        s = step_size(qp)
        bits = max(0.0, -math.log2(s) - 2.0)
        return {"qp": qp, "mse": s * s / 12.0, "bytes": int(bits * params / 8), "params": params,
                "decoded": {}}


def test_match_mse_brackets_target_with_neighbouring_qps():
    fake = _FakeCodec()
    arrays = {"w": np.zeros((100, 100), np.float32)}
    target = 3e-7
    m = match_mse(arrays, target, runner=fake, start_qp=-20)
    fine, coarse = m["fine"], m["coarse"]
    assert coarse["qp"] == fine["qp"] + 1
    assert fine["mse"] <= target <= coarse["mse"]
    assert coarse["bytes"] <= m["bytes_at_target"] <= fine["bytes"]
    assert fine["qp"] <= m["qp_at_target"] <= coarse["qp"]
    assert m["bits_per_param_at_target"] == pytest.approx(8 * m["bytes_at_target"] / 10000)
    assert "decoded" not in fine
    assert len(fake.calls) == len(set(fake.calls))  # each qp evaluated once
    # from the other side, and from the default start (a qp_for_mse guess)
    for start in (-70, None):
        m2 = match_mse(arrays, target, runner=_FakeCodec(), start_qp=start, use_dq=False)
        assert (m2["fine"]["qp"], m2["coarse"]["qp"]) == (fine["qp"], coarse["qp"])


def test_match_mse_reports_codec_failure_before_target():
    fake = _FakeCodec(fail_below=-40)
    arrays = {"w": np.zeros((10, 10), np.float32)}
    with pytest.raises(ValueError, match="failed"):
        match_mse(arrays, step_size(-48) ** 2 / 12, runner=fake, start_qp=-36)
    m = match_mse(arrays, step_size(-38) ** 2 / 11, runner=_FakeCodec(fail_below=-40), start_qp=-44)
    assert m["fine"]["qp"] == -38
    assert any("error" in v for v in m["evaluated"].values())


def test_run_nncodec_without_venv_says_how_to_create_it(monkeypatch, tmp_path):
    monkeypatch.setenv("NNLC_NNCODEC_PYTHON", str(tmp_path / "no" / "python"))
    assert not nncodec_available()
    with pytest.raises(NNCodecUnavailable, match="setup_venv.sh"):
        run_nncodec({"w": np.zeros((4, 4), np.float32)}, -32)


# ----------------------------------------------------------------------------- real NNCodec


def _small_model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc.weight": rng.laplace(0, 0.02, (128, 96)).astype(np.float32),
        "fc.bias": rng.normal(0, 0.1, 128).astype(np.float32),
        "conv.weight": rng.normal(0, 0.05, (8, 4, 3, 3)).astype(np.float32),
        "pow.exponent": np.array(2.0, np.float32),  # 0-d: kept raw
        "mask": np.array([-np.inf], np.float32),  # non-finite: kept raw
    }


@needs_nncodec
def test_nncodec_round_trip_at_qp_minus_32():
    arrays = _small_model()
    r = run_nncodec(arrays, qp=-32)
    step = 2.0**-8
    assert r["bitstream_bytes"] > 0
    assert r["raw_bytes"] == 8
    assert r["bytes"] == r["bitstream_bytes"] + r["raw_bytes"]
    assert r["params"] == sum(a.size for a in arrays.values())
    assert 1.0 < r["bits_per_param"] < 16.0
    assert r["encode_s"] > 0 and r["decode_s"] > 0
    # trellis (DQ) can exceed step/2, but not by much
    assert 0 < r["max_abs_err"] < 2 * step
    assert step**2 / 24 < r["mse_weights"] < step**2 / 2
    assert r["per_tensor"]["fc.bias"]["max_abs_err"] < 1e-4  # 1-D: nonweight_qp -75
    assert r["per_tensor"]["fc.weight"]["qp"] == -32
    assert set(r["raw"]) == {"pow.exponent", "mask"}
    dec = r["decoded"]
    assert dec["pow.exponent"].shape == () and dec["pow.exponent"] == np.float32(2.0)
    assert np.isneginf(dec["mask"]).all()
    for n, a in arrays.items():
        assert dec[n].shape == a.shape and dec[n].dtype == np.float32


@needs_nncodec
def test_nncodec_finer_qp_costs_more_and_errs_less_and_dq_off_respects_half_step():
    arrays = _small_model(1)
    coarse, fine = run_nncodec(arrays, -32, return_arrays=False), run_nncodec(arrays, -40, return_arrays=False)
    assert fine["bytes"] > coarse["bytes"] and fine["mse"] < coarse["mse"]
    no_dq = run_nncodec(arrays, -32, use_dq=False, return_arrays=False)
    assert no_dq["per_tensor"]["fc.weight"]["max_abs_err"] <= 2.0**-9 * (1 + 1e-6)


@needs_nncodec
def test_nncodec_error_is_reported_not_swallowed():
    with pytest.raises(NNCodecError, match="overflow"):
        run_nncodec(_small_model(), -32, raw_nonfinite=False)


@needs_nncodec
def test_match_mse_with_real_nncodec():
    arrays = {"w": np.random.default_rng(2).laplace(0, 0.02, (200, 100)).astype(np.float32)}
    m = match_mse(arrays, 1e-6, max_evals=8)
    assert m["fine"]["mse"] <= 1e-6 <= m["coarse"]["mse"]
    assert m["coarse"]["qp"] == m["fine"]["qp"] + 1
