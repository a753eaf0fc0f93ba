"""nnlc.entropy_models: STE, stable bin probabilities, learned densities, integer coding tables."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nnlc import entropy_models as em
from nnlc.coding import symbols, tables
from nnlc.entropy_models import deep_factorized, math, parametric

MODELS = {"deep_factorized": em.DeepFactorized, "laplace": em.Laplace, "logistic": em.Logistic}
MAX_CHANNELS = 3
INITIAL_PARAMS = {  # the pure initialisers the modules use (cheaper than tracing module.init)
    "deep_factorized": deep_factorized.init_params,
    "laplace": lambda rng, channels: parametric.init_params(channels),
    "logistic": lambda rng, channels: parametric.init_params(channels),
}


@functools.cache
def _initial_params(name: str) -> dict:
    """Initial params of MAX_CHANNELS channels (one compilation per family)."""
    return jax.jit(INITIAL_PARAMS[name], static_argnums=1)(jax.random.key(0), MAX_CHANNELS)


def _perturbed_params(name: str, channels: int = 3, seed: int = 0) -> dict:
    """A model's initial params plus noise, so that densities are skewed and uneven."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: jnp.asarray(
        leaf[:channels] + 0.7 * rng.standard_normal(leaf[:channels].shape), jnp.float32),
        _initial_params(name))


def _float64(params):
    return jax.tree.map(lambda leaf: np.asarray(leaf, dtype=np.float64), params)


def _code_length_bits(fields: dict) -> int:
    return 8 * (len(fields["ans_words"]) + len(fields["escapes"]) + len(fields["raw_bits"]))


# ---------------------------------------------------------------------------------------------
# Training-time operations.


def test_ste_round_rounds_forward_and_has_identity_gradient():
    x = jnp.array([-2.7, -0.49, 0.2, 0.51, 3.5, 10.0])
    np.testing.assert_array_equal(em.ste_round(x), jnp.round(x))
    gradient = jax.grad(lambda v: jnp.sum(jnp.arange(6.0) * em.ste_round(v)))(x)
    np.testing.assert_array_equal(gradient, jnp.arange(6.0))


def test_uniform_noise_stays_within_half_a_bin():
    x = jnp.zeros((20000,))
    noise = em.add_uniform_noise(x, jax.random.key(0))
    assert float(jnp.max(jnp.abs(noise))) <= 0.5
    assert abs(float(jnp.mean(noise))) < 0.01
    assert abs(float(jnp.var(noise)) - 1 / 12) < 0.003


@pytest.mark.parametrize("mode, expected", [("identity_if_towards", [0.0, -1.0, 1.0]),
                                            ("identity", [1.0, -1.0, 1.0]),
                                            ("disconnected", [0.0, 0.0, 1.0])])
def test_lower_bound_gradient_modes(mode, expected):
    x = jnp.array([0.0, 0.0, 2.0])  # below, below, above a bound of 1
    cotangent = jnp.array([1.0, -1.0, 1.0])  # descent would push x down, up, down
    value, vjp = jax.vjp(lambda v: em.lower_bound(v, 1.0, mode), x)
    np.testing.assert_array_equal(value, [1.0, 1.0, 2.0])
    np.testing.assert_array_equal(vjp(cotangent)[0], expected)


# ---------------------------------------------------------------------------------------------
# Bin probabilities.


def test_sign_flip_and_log_space_probabilities_agree_across_both_tails():
    lower = np.concatenate([np.linspace(-60, 60, 241), [-700.0, 700.0]])
    upper = lower + np.geomspace(1e-6, 5.0, lower.size)
    exact = np.exp(em.log_bin_probabilities(lower, upper))
    np.testing.assert_allclose(em.bin_probabilities(lower, upper), exact, rtol=1e-9)
    assert np.all(exact > 0)
    # The naive difference cancels to 0 in the upper tail; the stable forms do not.
    naive = math.sigmoid(upper) - math.sigmoid(lower)
    assert naive[lower > 40].max() == 0.0 and exact[lower > 40].min() > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bin_probabilities_sum_to_one(name):
    model, params = MODELS[name](3), _perturbed_params(name)
    total32 = np.asarray(jax.jit(model.pmf, static_argnums=(1, 2))(params, -4000, 4000)).sum(axis=0)
    total64 = model.pmf(_float64(params), -4000, 4000).sum(axis=0)
    print(f"{name}: |1 - sum P| float32 {np.max(np.abs(1 - total32)):.2e}, "
          f"float64 {np.max(np.abs(1 - total64)):.2e}")
    np.testing.assert_allclose(total32, 1.0, atol=1e-6)
    np.testing.assert_allclose(total64, 1.0, atol=1e-12)


def test_deep_factorized_bins_equal_the_integrated_density():
    """c(k + 1/2) - c(k - 1/2) = integral of c' over the bin (Simpson's rule on jax.grad of c)."""
    params = _perturbed_params("deep_factorized", channels=2)
    nodes = 64  # Simpson intervals per bin
    offsets = np.linspace(-0.5, 0.5, nodes + 1)
    weights = np.ones(nodes + 1)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    weights /= 3.0 * nodes
    integers = np.arange(-40, 41)
    grid = jnp.asarray((integers[:, None] + offsets[None, :]).reshape(-1, 1).repeat(2, axis=1),
                       jnp.float32)
    density = np.asarray(jax.jit(deep_factorized.density)(params, grid), np.float64)
    assert np.all(density >= 0)
    integrated = (density.reshape(integers.size, nodes + 1, 2) * weights[None, :, None]).sum(axis=1)
    probabilities = deep_factorized.pmf(_float64(params), -40, 40)
    np.testing.assert_allclose(probabilities, integrated, atol=2e-6, rtol=1e-4)
    assert probabilities.max() > 0.01  # the comparison is not vacuous


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tails_are_positive_finite_and_have_finite_gradients(name):
    model, params = MODELS[name](3), _perturbed_params(name)
    far = np.array([-1e6, -1e3, -300.0, 300.0, 1e3, 1e6])
    grid = np.repeat(far[:, None], 3, axis=1)
    log_p32 = jax.jit(functools.partial(math.log_noisy_likelihood, model.logits_cdf))(params, grid)
    log_p64 = math.log_noisy_likelihood(model.logits_cdf, _float64(params), grid)
    assert np.all(np.isfinite(log_p32)) and np.all(np.isfinite(log_p64))
    p64 = model.pmf(_float64(params), -300, 300)
    assert np.all(p64 > 0) and np.all(np.isfinite(p64))

    def rate(p):
        return jnp.sum(model.apply({"params": p}, jnp.asarray(grid, jnp.float32)))

    value, gradient = jax.jit(jax.value_and_grad(rate))(params)
    assert np.isfinite(float(value))
    assert value == pytest.approx(-np.log2(1e-9) * grid.size, rel=1e-5)  # all at the bound
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(gradient))
    # Without the bound the rate stays in log space: finite, large, with finite gradients.
    unbounded = functools.partial(math.bits, model.logits_cdf, x=jnp.asarray(grid[1:-1]),
                                  likelihood_bound=0.0)
    value, gradient = jax.jit(jax.value_and_grad(unbounded))(params)
    assert np.isfinite(float(value)) and float(value) > 4 * 3 * 30
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(gradient))


def test_quantiles_of_a_laplace_match_the_closed_form():
    params = {"loc": np.array([1.5, -3.0]), "log_scale": np.log(np.array([2.0, 0.3]))}
    found = em.quantiles(parametric.laplace_logits_cdf, params, [1e-9, 0.25, 0.5])
    upper = em.quantiles_at_logits(parametric.laplace_logits_cdf, params, [np.log1p(-1e-9) - np.log(1e-9)])
    found = np.concatenate([found, upper])
    scale, loc = np.exp(params["log_scale"]), params["loc"]
    expected = np.stack([loc + scale * np.log(2e-9), loc - scale * np.log(2.0), loc,
                         loc - scale * np.log(2e-9)])
    np.testing.assert_allclose(found, expected, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Flax shells.


@pytest.mark.parametrize("name", sorted(MODELS))
def test_module_declares_the_pure_params_and_calls_the_pure_functions(name):
    model = MODELS[name](2)
    declared = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 2)))["params"]
    pure = jax.eval_shape(functools.partial(INITIAL_PARAMS[name], channels=2), jax.random.key(0))
    assert jax.tree.map(jnp.shape, declared) == jax.tree.map(jnp.shape, pure)
    for path, leaf in jax.tree_util.tree_leaves_with_path(declared):  # the non-random initial values
        if "bias" not in jax.tree_util.keystr(path):
            pure_leaf = _initial_params(name)
            for key in path:
                pure_leaf = pure_leaf[key.key]
            np.testing.assert_array_equal(leaf, pure_leaf[:2])
    params = _perturbed_params(name, channels=2)
    x = jnp.asarray(np.random.default_rng(3).normal(0.0, 6.0, (4, 5, 2)), jnp.float32)
    expected = jax.jit(functools.partial(math.bits_per_element, model.logits_cdf))(params, x)
    np.testing.assert_allclose(jax.jit(model.apply)({"params": params}, x), expected, rtol=1e-6)
    np.testing.assert_allclose(model.pmf(params, -3, 3), math.pmf(model.logits_cdf, params, -3, 3))


def test_rounded_latent_bits_equal_minus_log2_of_the_pmf():
    params = _perturbed_params("deep_factorized", channels=2)
    integers = jnp.arange(-10.0, 11.0)[:, None].repeat(2, axis=1)
    expected = -np.log2(deep_factorized.pmf(_float64(params), -10, 10))
    np.testing.assert_allclose(jax.jit(deep_factorized.bits_per_element)(params, integers), expected,
                               rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Coding mode.


def _fit(model, data: np.ndarray, steps: int, learning_rate: float = 2e-2):
    """Minimises the rate of noisy latents (data + u) by full-batch Adam; returns params."""
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, data.shape[1])))["params"]
    optimizer = optax.adam(learning_rate)
    x = jnp.asarray(data, jnp.float32)

    def mean_bits(p, key):
        return jnp.mean(model.apply({"params": p}, em.add_uniform_noise(x, key)))

    def step(carry, key):
        p, state = carry
        gradient = jax.grad(mean_bits)(p, key)
        updates, state = optimizer.update(gradient, state)
        return (optax.apply_updates(p, updates), state), None

    keys = jax.random.split(jax.random.key(1), steps)
    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, keys))((params, optimizer.init(params)))
    return params


def test_fitted_rate_agrees_with_table_ideal_and_constriction_code_length():
    rng = np.random.default_rng(0)
    count = 5000
    data = np.round(rng.laplace([0.0, 2.0], [3.0, 8.0], size=(count, 2))).astype(np.int64)
    model = em.DeepFactorized(2)
    params = _fit(model, data, steps=200)

    @jax.jit
    def training_rate(key):  # bits per channel of data + u, averaged over 8 draws of u
        noisy = em.add_uniform_noise(jnp.broadcast_to(jnp.asarray(data, jnp.float32), (8, *data.shape)), key)
        return jnp.sum(model.apply({"params": params}, noisy), axis=(0, 1)) / 8

    noisy_bits = np.asarray(training_rate(jax.random.key(7)))
    for channel in range(2):
        values = data[:, channel]
        plan = em.coding_plan_for(model, params, channel)
        fields = symbols.encode_symbols(values, plan)
        np.testing.assert_array_equal(symbols.decode_symbols(fields, count), values)
        ideal = symbols.ideal_code_bits(fields, values)
        actual = _code_length_bits(fields)
        _, counts = np.unique(values, return_counts=True)
        entropy = -np.sum(counts * np.log2(counts / count))
        print(f"channel {channel} (bits/value): training estimate {noisy_bits[channel] / count:.4f}, "
              f"table ideal {ideal / count:.4f}, constriction {actual / count:.4f}, "
              f"empirical entropy {entropy / count:.4f}")
        assert noisy_bits[channel] == pytest.approx(ideal, rel=0.02)
        assert actual == pytest.approx(ideal, rel=0.02)
        assert ideal >= entropy


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("precision", [16, 12])
def test_integer_tables_sum_to_the_precision_and_code_round_trip(name, precision):
    model, params = MODELS[name](3), _perturbed_params(name)
    rng = np.random.default_rng(1)
    for channel in range(3):
        first, frequencies, escape_frequency = em.to_integer_table(model, params, channel, precision)
        assert frequencies.dtype == np.int64 and np.all(frequencies >= 1) and escape_frequency >= 1
        assert int(frequencies.sum()) + escape_frequency == 1 << precision
        lower, upper = em.support(model, params, channel)
        assert lower <= first and first + len(frequencies) - 1 <= upper
        plan = em.coding_plan_for(model, params, channel, precision)
        values = rng.integers(first - 50, first + len(frequencies) + 50, size=500)
        fields = symbols.encode_symbols(values, plan)
        np.testing.assert_array_equal(symbols.decode_symbols(fields, values.size), values)


def test_table_is_built_in_float64_from_the_exact_laplace_pmf():
    params = {"loc": jnp.array([0.25]), "log_scale": jnp.log(jnp.array([4.0]))}
    first, frequencies, escape = em.to_integer_table(em.Laplace(1), params, 0, min_probability=0)
    integers = np.arange(first, first + len(frequencies), dtype=np.float64)
    loc, scale = 0.25, float(np.float32(4.0))

    def cdf(x):
        z = (x - loc) / scale
        return np.where(z < 0, 0.5 * np.exp(z), 1 - 0.5 * np.exp(-z))

    probabilities = cdf(integers + 0.5) - cdf(integers - 0.5)
    expected = tables.table_from_counts(first, probabilities, 16, 0)  # same quantizer, no escape
    assert np.abs(frequencies - expected.frequencies).max() <= 2 + escape  # escape takes its share


@functools.cache
def _fixed_plan():
    params = _perturbed_params("deep_factorized", channels=1, seed=5)
    return em.coding_plan_for(em.DeepFactorized(1), params, 0)


@given(hnp.arrays(np.int64, st.integers(1, 200),
                  elements=st.one_of(st.integers(-30, 30), st.integers(-(1 << 40), 1 << 40))))
@settings(max_examples=50, deadline=None)
def test_integer_table_coding_round_trips_any_integers_through_the_escape(values):
    plan = _fixed_plan()
    fields = symbols.encode_symbols(values, plan)
    np.testing.assert_array_equal(symbols.decode_symbols(fields, values.size), values)


def test_laplace_logits_are_smooth_at_the_location():
    params = {"loc": jnp.zeros((1,)), "log_scale": jnp.zeros((1,))}
    logit = lambda z: parametric.laplace_logits_cdf(params, z[None])[0]
    slope = jax.jit(jax.vmap(jax.grad(logit)))(jnp.array([-1e-4, 0.0, 1e-4]))
    np.testing.assert_allclose(slope, 2.0, rtol=1e-3)  # d logit(c) / dz = c' / (c (1 - c)) = 2 at 0
