"""The op registry: one small function per ONNX operator, and what each op needs from the interpreter.

An op function has the signature `fn(ctx, *inputs) -> value | tuple[value, ...]` where `ctx` is a
`NodeContext` (attributes, opset, the array module to use, subgraph runner) and each input is a numpy
array (known at trace time), a jax array / tracer, or None for an omitted optional input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_DOMAIN = ""
_DOMAIN_ALIASES = {"ai.onnx": DEFAULT_DOMAIN}


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """How to run one ONNX operator.

    static_inputs: input positions whose values decide shapes (e.g. Reshape's `shape`); the
        interpreter hands them to the op as numpy arrays, or fails with a clear message when they
        are only known at run time.
    numpy_ok: the function also works with `ctx.xp = numpy`, so that nodes whose inputs are all
        known at trace time are folded with numpy instead of being traced.
    """

    op_type: str
    fn: Callable[..., Any]
    static_inputs: tuple[int, ...] = ()
    numpy_ok: bool = True
    domain: str = DEFAULT_DOMAIN


REGISTRY: dict[tuple[str, str], OpSpec] = {}


def normalize_domain(domain: str) -> str:
    return _DOMAIN_ALIASES.get(domain, domain)


def register(*op_types: str, static_inputs: Sequence[int] = (), numpy_ok: bool = True,
             domain: str = DEFAULT_DOMAIN) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering `fn` for each of `op_types`."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for op_type in op_types:
            key = (normalize_domain(domain), op_type)
            if key in REGISTRY:
                raise ValueError(f"op {op_type!r} registered twice")
            REGISTRY[key] = OpSpec(op_type, fn, tuple(static_inputs), numpy_ok, normalize_domain(domain))
        return fn

    return decorate


def lookup(op_type: str, domain: str = DEFAULT_DOMAIN) -> OpSpec | None:
    return REGISTRY.get((normalize_domain(domain), op_type))


def supported_ops(domain: str = DEFAULT_DOMAIN) -> list[str]:
    """Sorted names of the operators this package runs (after importing the op modules)."""
    return sorted(op for dom, op in REGISTRY if dom == normalize_domain(domain))


@dataclasses.dataclass
class NodeContext:
    """What an op function sees of its node besides the input values."""

    op_type: str
    name: str
    attrs: Mapping[str, Any]
    opset: int
    num_outputs: int
    xp: Any  # numpy or jax.numpy
    run_subgraph: Callable[[str, Sequence[Any]], list[Any]] | None = None
    precision: Any = None

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    @property
    def is_numpy(self) -> bool:
        return self.xp is np

    def fail(self, message: str) -> Exception:
        """An error naming the node, for unsupported attribute values met while tracing."""
        return NotImplementedError(f"{self.op_type} node {self.name!r} (opset {self.opset}): {message}")
