"""Rate-constrained OPTQ and equal-slope allocation (nnlc.calibrated)."""

import math

import numpy as np

from nnlc.calibrated import allocation, optq
from nnlc.coding import symbols


def _correlated_layer(seed=0, rows=32, columns=48, samples=1500):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((columns, columns)) * 0.4 + np.eye(columns)
    inputs = rng.standard_normal((samples, columns)) @ mixing
    hessian = (inputs.T @ inputs / samples)[None]
    weights = rng.standard_normal((1, rows, columns)) * 0.05
    return weights, hessian


def test_optq_with_identity_hessian_equals_rdo_rounding():
    weights, _ = _correlated_layer()
    lengths = optq.code_lengths_for(np.rint(weights / 0.02))
    with_identity = optq.quantize_layer(weights, 0.02, np.eye(weights.shape[2])[None], 1e-3, 1.0, lengths, damping=0.0)
    rounding = optq.quantize_layer(weights, 0.02, None, 1e-3, 1.0, lengths)
    assert np.array_equal(with_identity, rounding)


def test_optq_beats_rounding_at_the_same_code_length():
    weights, hessian = _correlated_layer()
    step = 0.02
    rounded = np.rint(weights / step).astype(np.int64)
    compensated = optq.quantize_layer(weights, step, hessian)
    bits_rounded = symbols.plan_coding(rounded.ravel()).estimated_bits
    bits_compensated = symbols.plan_coding(compensated.ravel()).estimated_bits
    assert abs(bits_compensated - bits_rounded) < 0.02 * bits_rounded
    assert optq.layer_error(weights, step * compensated, hessian) < 0.7 * optq.layer_error(weights, step * rounded, hessian)


def test_rate_term_lowers_the_code_length():
    weights, hessian = _correlated_layer(1)
    step = 0.02
    plain = optq.quantize_layer(weights, step, hessian)
    lengths = optq.code_lengths_for(plain)
    rated = optq.quantize_layer(weights, step, hessian, lmbda=1e-3, weight=1.0, lengths=lengths)
    assert symbols.plan_coding(rated.ravel()).estimated_bits < symbols.plan_coding(plain.ravel()).estimated_bits


def test_allocation_lands_on_the_known_optimum_with_equal_slopes():
    # D = sum a_t s_t^2, R = sum n_t (h - log2 s_t): the optimum of D + lmbda R by brute force
    sensitivities = {"a": 3.0, "b": 0.2, "c": 40.0}
    params = {"a": 100, "b": 1000, "c": 10}
    lmbda = 1e-4
    for name in sensitivities:
        grid = np.exp(np.linspace(math.log(1e-5), math.log(10), 200001))
        cost = sensitivities[name] * grid ** 2 - lmbda * params[name] * np.log2(grid)
        best = grid[np.argmin(cost)]
        step = allocation.allocated_step(lmbda, params[name], sensitivities[name])
        assert abs(step / best - 1) < 1e-3
        assert abs(allocation.slope(step, params[name], sensitivities[name]) / lmbda - 1) < 1e-9
    total = sum(sensitivities[n] * allocation.allocated_step(lmbda, params[n], sensitivities[n]) ** 2 for n in params)
    assert abs(total / (lmbda * sum(params.values()) / (2 * math.log(2))) - 1) < 1e-9
    qp, snapped = allocation.snap_to_qp(0.01)
    assert abs(math.log2(snapped / 0.01)) <= 0.125 + 1e-9
