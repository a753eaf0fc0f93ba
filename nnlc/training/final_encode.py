"""Final encode of a trained problem: rounded latents + decoder steps + integer tables -> bitstream.

Tensors that were not trained are coded as post-training mode codes them (exactly, or at the fine
`fixed_qp`), and the problem's fixed weights are those decoded values, so the bitstream decodes to
exactly the network the training forward pass used.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import onnx

from nnlc import encoder, onnx_io, quantization
from nnlc.coding.symbols import CodingPlan
from nnlc.entropy_models.integer_tables import coding_plan_for
from nnlc.decoder import latents as latent_decoders
from nnlc.reparam.reparameterization import Reparameterization
from nnlc.training import entropy
from nnlc.training.problem import Problem, effective_latents

DECODER_CODES = {"scalar": latent_decoders.SCALAR, "channel": latent_decoders.CHANNEL, "dct": latent_decoders.DCT}

PRODUCER = "nnlc 0.1 learned"


def fixed_tensor_plan(model: onnx.ModelProto, names: set[str], fixed_qp: int) -> dict[str, encoder.CodedTensor]:
    """Post-training decisions (raw or quantized at `fixed_qp`) for the tensors that are not trained."""
    planned = encoder.plan_tensors(model, qp=fixed_qp, nonweight_qp=fixed_qp)
    return {item.record.name: item for item in planned if item.record.name in names or not item.record.is_float}


def decoded_fixed_values(items: dict[str, encoder.CodedTensor]) -> dict[str, np.ndarray]:
    """The values the decoder will produce for the fixed tensors."""
    values = {}
    for name, item in items.items():
        if item.mode == encoder.QUANTIZED:
            values[name] = quantization.dequantize(item.symbols, item.step).reshape(item.record.array.shape)
        elif item.record.is_float:
            values[name] = np.asarray(item.record.array)
    return values


def learned_coding_plan(problem: Problem, params: dict, group: str) -> CodingPlan:
    """Integer table of a group's learned density (coding mode, built once; Ballé et al. 2018)."""
    _, _, logits_cdf = entropy.family(problem.entropy_family)
    return coding_plan_for(logits_cdf, params["entropy"][group], channel=0)


def rate_distortion_rounding(latents: np.ndarray, tradeoff: float) -> np.ndarray:
    """Integers q in {floor(phi), ceil(phi)} minimising (q - phi)**2 + tradeoff * bits(q).

    bits(q) = -log2 of the frequency of q among the nearest-rounded latents (add-one smoothed):
    rounding toward the more probable neighbour when the latent sits near the middle (the
    rate-distortion optimised quantization of video coders, here on the learned latents).
    """
    latents = np.asarray(latents, np.float64)
    nearest = quantization.round_to_int64(latents, "latent")
    values, counts = np.unique(nearest, return_counts=True)
    low = np.floor(latents).astype(np.int64)
    candidates = np.stack([low, low + 1])

    def bits(q):
        index = np.clip(np.searchsorted(values, q), 0, len(values) - 1)
        found = np.where(values[index] == q, counts[index], 0)
        return -np.log2((found + 1.0) / (nearest.size + len(values) + 1.0))

    cost = (candidates - latents[None]) ** 2 + tradeoff * bits(candidates)
    return np.where(cost[0] <= cost[1], candidates[0], candidates[1])


def latent_items(problem: Problem, params: dict, tables: str = "fitted", rounding: str = "nearest",
                 rdo_tradeoff: float = 0.1) -> dict[str, encoder.CodedTensor]:
    """Rounded latents of the trained tensors with their float32 steps, as the decoder will read them.

    tables='fitted': each tensor's table is fitted to its integer latents (smallest, side info
    included); 'learned': the tables of the learned entropy models (what the training rate estimated).
    """
    if tables not in ("fitted", "learned"):
        raise ValueError(f"coding tables {tables!r}: fitted or learned")
    steps = Reparameterization.bitstream_steps(params["decoder"], problem.plan)
    latents = jax.jit(lambda p: effective_latents(problem, p))(params)
    plans = {group: learned_coding_plan(problem, params, group) for group in set(problem.group_of.values())} \
        if tables == "learned" else {}
    items = {}
    for name in problem.trained:
        record = problem.records[name]
        continuous = np.asarray(jax.device_get(latents[name]), np.float64)
        if rounding == "nearest":
            symbols = quantization.round_to_int64(continuous, f"latent of {name} (the step collapsed in training?)")
        elif rounding == "rdo":
            symbols = rate_distortion_rounding(continuous, rdo_tradeoff)
        else:
            raise ValueError(f"final rounding {rounding!r}: nearest or rdo")
        if symbols.size and np.max(np.abs(symbols)) > quantization.MAX_QUANTIZED_MAGNITUDE:
            raise ValueError(f"{name}: a latent exceeds 2**23; the step collapsed during training")
        items[name] = encoder.CodedTensor(record, encoder.LATENT, symbols=symbols.ravel(),
                                          latent_decoder=DECODER_CODES[problem.plan[name].kind],
                                          steps=np.asarray(steps[name], np.float32).ravel(),
                                          coding_plan=plans.get(problem.group_of[name]))
    return items


def encode_problem(problem: Problem, params: dict, fixed_items: dict[str, encoder.CodedTensor],
                   carry_topology: bool = True, producer: str = PRODUCER, tables: str = "fitted",
                   rounding: str = "nearest", rdo_tradeoff: float = 0.1) -> encoder.EncodeResult:
    """The bitstream of a trained problem (tensor order: the model's)."""
    trained = latent_items(problem, params, tables, rounding, rdo_tradeoff)
    planned = [trained.get(name) or fixed_items[name]
               for name in onnx_io.find_tensors(problem.model, include_integer=True)
               if name in trained or name in fixed_items]
    return encoder.write_bitstream(problem.model, planned, carry_topology, producer)


def rate_report(result: encoder.EncodeResult, problem: Problem) -> dict[str, Any]:
    """Bytes split into latents, other tensors and topology; bits per trained parameter."""
    latent_bytes = sum(row["bytes"] for row in result.rows if row["mode"] == "latent")
    return {"bytes": result.total_bytes, "latent_bytes": latent_bytes, "topology_bytes": result.topology_bytes,
            "other_bytes": result.total_bytes - latent_bytes - result.topology_bytes,
            "latent_bits_per_param": 8 * latent_bytes / max(1, problem.trained_params),
            "latent_ideal_bits_per_param": sum(row.get("ideal_payload_bits", 0) for row in result.rows
                                               if row["mode"] == "latent") / max(1, problem.trained_params)}
