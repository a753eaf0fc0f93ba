"""Latent decoders of the learned mode as the bitstream names them (codes 1, 2, 3).

The formulas (docs/bitstream.md, "Latent decoders"; Oktay et al., ICLR 2020) are implemented once, in
`nnlc.reparam.numpy_decoders` (numpy only, no jax), which the jax training code mirrors; this module
maps the bitstream's decoder codes onto it.
"""

from __future__ import annotations

import numpy as np

from nnlc.reparam import numpy_decoders

SCALAR, CHANNEL, DCT = 1, 2, 3
KIND_NAMES = {SCALAR: "scalar", CHANNEL: "channel", DCT: "dct"}
dct_matrix = numpy_decoders.dct_matrix


def step_count(kind: int, shape: tuple[int, ...]) -> int:
    """How many float32 steps a tensor of this shape stores for this decoder code."""
    if kind not in KIND_NAMES:
        raise ValueError(f"unknown latent decoder {kind}")
    return int(np.prod(numpy_decoders.step_shape(KIND_NAMES[kind], tuple(shape)), dtype=np.int64))


def decode_latents(kind: int, symbols: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Weights (float32, the shape of `symbols`) from integer latents and float32 steps."""
    if kind not in KIND_NAMES:
        raise ValueError(f"unknown latent decoder {kind}")
    return numpy_decoders.decode_numpy(KIND_NAMES[kind], np.asarray(symbols), np.asarray(steps, dtype=np.float32))
