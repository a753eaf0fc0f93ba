"""nnlc.quantization: rounding to the bitstream's integers and the documented reconstruction."""

import numpy as np
import pytest

from nnlc import quantization
from nnlc.training.final_encode import rate_distortion_rounding


def test_round_to_int64_rounds_half_to_even():
    values = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.49, 2**23])
    np.testing.assert_array_equal(quantization.round_to_int64(values), [-2, -2, 0, 0, 2, 2, 2**23])
    assert quantization.round_to_int64(values).dtype == np.int64


@pytest.mark.parametrize("bad, message", [(np.nan, "not finite"), (np.inf, "not finite"), (-np.inf, "not finite"),
                                          (2.0**23 + 1, "beyond the bitstream's 2\\*\\*23"),
                                          (1e30, "beyond the bitstream's 2\\*\\*23")])
def test_round_to_int64_refuses_what_has_no_bitstream_integer(bad, message):
    with pytest.raises(ValueError, match=message):
        quantization.round_to_int64(np.array([0.0, bad, 1.0]))


def test_quantize_refuses_a_step_too_fine_for_the_values():
    values = np.array([1.0, -3.0], np.float32)
    with pytest.raises(ValueError, match="quantized weight rounds to"):
        quantization.quantize(values, np.float32(1e-9))
    step = quantization.usable_step(values, 1e-9)  # the usable step keeps |q| <= 2**23
    integers = quantization.quantize(values, step)
    assert np.max(np.abs(integers)) <= quantization.MAX_QUANTIZED_MAGNITUDE
    np.testing.assert_allclose(quantization.dequantize(integers, step), values, rtol=1e-6)


def test_rate_distortion_rounding_refuses_non_finite_latents():
    with pytest.raises(ValueError, match="latent is not finite"):
        rate_distortion_rounding(np.array([0.2, np.nan, 1.7]), 0.1)
