"""Which decoder each tensor gets, and which tensors share an entropy model.

Oktay et al., ICLR 2020, §2: tensors are split into parameter groups; each group has one decoder
type and one entropy model. nnlc picks the decoder from the tensor's role (`onnx_io.TensorRecord.role`)
and shape; the defaults and their reasons are in docs/reparam.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from nnlc import encoder
from nnlc.onnx_io import TensorRecord

DEFAULT_CONFIG: dict[str, Any] = {
    "conv_decoder": "dct",        # conv kernels with spatial size > 1: 'dct', 'channel' or 'scalar'
    "dense_decoder": "channel",   # dense, embedding, recurrent W/R, 1x1 convs, other >= 2-D: 'channel' or 'scalar'
    "bias_decoder": "scalar",     # bias, normalization, recurrent B, other 1-D: 'scalar' (fixed fine step) or 'fixed'
    "bias_qp": -75,               # NNR qp of that fixed fine step (NNCodec's non-weight default); None: learned
    "init_qp": None,              # start steps from this NNR qp ...
    "init_bits": 6.0,             # ... or, when None, at std / 2**init_bits
    "min_channel_elements": 32,   # channel decoders with fewer elements per channel become scalar
    "share_entropy_model": "tensor",  # 'tensor', 'role' or 'global'
    "lossless_names": (),         # names or regexes of tensors to store exactly
}
_CHOICES = {
    "conv_decoder": ("dct", "channel", "scalar"),
    "dense_decoder": ("channel", "scalar"),
    "bias_decoder": ("scalar", "fixed"),
    "share_entropy_model": ("tensor", "role", "global"),
}
_KERNEL_ROLES = ("conv_kernel", "depthwise_kernel")
_MATRIX_ROLES = ("dense", "embedding", "recurrent_w", "recurrent_r")
_VECTOR_ROLES = ("bias", "normalization", "recurrent_b")


@dataclasses.dataclass(frozen=True)
class TensorPlan:
    """How one tensor is reparameterized.

    kind: 'scalar', 'channel', 'dct' or 'fixed'. group: the entropy model its latents use ('' for
    fixed tensors, which have no latents). step_qp: when set, the step is this NNR qp's and is not
    trained (biases, normalization); otherwise the step is learned. reason: why this kind.
    """

    kind: str
    group: str
    role: str
    shape: tuple[int, ...]
    step_qp: int | None = None
    reason: str = ""

    @property
    def trains_step(self) -> bool:
        return self.kind in ("scalar", "channel", "dct") and self.step_qp is None

    @property
    def has_latents(self) -> bool:
        return self.kind != "fixed"


def resolve_config(config: Mapping[str, Any] | Any | None) -> dict[str, Any]:
    """DEFAULT_CONFIG overridden by `config` (a dict or ml_collections ConfigDict); unknown keys raise."""
    resolved = dict(DEFAULT_CONFIG)
    if config is None:
        return resolved
    items = config.items() if hasattr(config, "items") else dict(config).items()
    for key, value in items:
        if key not in DEFAULT_CONFIG:
            raise ValueError(f"unknown reparam config key {key!r}; known keys: {sorted(DEFAULT_CONFIG)}")
        resolved[key] = value
    for key, choices in _CHOICES.items():
        if resolved[key] not in choices:
            raise ValueError(f"reparam config {key}={resolved[key]!r}; expected one of {choices}")
    if isinstance(resolved["lossless_names"], str):
        resolved["lossless_names"] = (resolved["lossless_names"],)
    return resolved


def _spatial_size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[2:], dtype=np.int64)) if len(shape) >= 3 else 1


def _choose_kind(record: TensorRecord, config: Mapping[str, Any]) -> tuple[str, bool, str]:
    """(kind, has a fixed fine step, reason) for a tensor that may be compressed."""
    shape, role = tuple(record.array.shape), record.role
    if role in _KERNEL_ROLES and len(shape) >= 3 and _spatial_size(shape) > 1:
        kind = config["conv_decoder"]
        if kind == "dct" and len(shape) > 4:
            return "channel", False, "conv kernel with 3 spatial axes (dct covers 1-D and 2-D)"
        return kind, False, "conv kernel with spatial size > 1"
    if role in _KERNEL_ROLES or role in _MATRIX_ROLES or (role == "other" and len(shape) >= 2):
        if len(shape) >= 2:
            return config["dense_decoder"], False, "matrix-like weight (dense, embedding, recurrent, 1x1 conv)"
    if role in _VECTOR_ROLES or len(shape) < 2:
        if config["bias_decoder"] == "scalar" and config["bias_qp"] is None:
            return "scalar", False, "bias-like tensor: learned step (bias_qp=None)"
        return config["bias_decoder"], config["bias_decoder"] == "scalar", "bias-like tensor: fine fixed step"
    return config["dense_decoder"], False, f"{role} tensor with {len(shape)} axes"


def _group(name: str, plan: TensorPlan, sharing: str) -> str:
    if not plan.has_latents:
        return ""
    if sharing == "tensor":
        return name
    if sharing == "role" or plan.step_qp is not None:
        return f"{plan.role}/{plan.kind}"
    return "global"


def plan_reparam(records: Mapping[str, TensorRecord], config: Mapping[str, Any] | Any | None = None
                 ) -> dict[str, TensorPlan]:
    """A TensorPlan for every float tensor of `records` (e.g. `onnx_io.find_float_tensors(model)`).

    Tensors the post-training encoder stores exactly (`encoder.lossless_reason`: 0-d, <= 16
    elements, inf/nan, or named in `lossless_names`; `encoder.generated_tensor`: analytic constants
    such as an STFT's DFT basis, generated exactly) are 'fixed'. Non-float records are skipped.
    """
    config = resolve_config(config)
    plans: dict[str, TensorPlan] = {}
    for name, record in records.items():
        if not record.is_float:
            continue
        shape = tuple(int(size) for size in record.array.shape)
        reason = encoder.lossless_reason(record, config["lossless_names"])
        if not reason and encoder.generated_tensor(record) is not None:
            reason = "analytic constant: generated exactly"
        if reason:
            kind, fine_step = "fixed", False
        else:
            kind, fine_step, reason = _choose_kind(record, config)
            if kind == "channel" and record.array.size < config["min_channel_elements"] * shape[0]:
                kind, reason = "scalar", f"fewer than {config['min_channel_elements']} elements per channel"
        plan = TensorPlan(kind, "", record.role, shape, config["bias_qp"] if fine_step else None, reason)
        plans[name] = dataclasses.replace(plan, group=_group(name, plan, config["share_entropy_model"]))
    return plans
