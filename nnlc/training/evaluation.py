"""Task figures of a decoded network: labelled accuracy (digits) or fidelity to the original (DESIGN §6)."""

from __future__ import annotations

from typing import Any

import onnx


def evaluate(config: Any, original_path: str, decoded_path: str) -> dict:
    kind = config.get("evaluation", "none")
    if kind == "none":
        return {}
    if kind == "digits_accuracy":
        from nnlc.zoo import digits

        _, _, x_test, y_test = digits.load_digits_split()
        return {"accuracy": digits.onnx_accuracy(onnx.load(decoded_path), x_test, y_test),
                "original_accuracy": digits.onnx_accuracy(onnx.load(original_path), x_test, y_test)}
    from nnlc import fidelity

    return fidelity.evaluate_fidelity(kind, original_path, decoded_path, **config.get("evaluation_options", {}))
