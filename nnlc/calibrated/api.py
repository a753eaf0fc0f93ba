"""Calibrated compression from Python: calibration inputs in, bitstream (and its per-tensor story) out.

    from nnlc.calibrated import compress_calibrated
    result = compress_calibrated(onnx.load("m.onnx"), "photos/", target="transparent")
    open("m.nnlc", "wb").write(result.bitstream)

`target` (default `transparent` when no `lmbda` is given) is checked on the hold-out calibration
split; with `lmbda` one rate point is made and its hold-out fidelity reported. The bitstream is the
existing format (per-tensor QUANTIZED steps), decodable by the standalone decoder.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import onnx

from nnlc import encoder
from nnlc.calibrated import allocation
from nnlc.calibrated.compress import CalibratedOptions, Calibrator, Point
from nnlc.calibrated.target import SearchResult, Target, check_target_fits, distortion_budget, parse_target, \
    search_lambda
from nnlc.calibration import CalibrationOptions, CalibrationSet, load_calibration
from nnlc.errors import NnlcError


@dataclasses.dataclass
class CalibratedResult:
    """What a calibrated compression made and measured."""

    bitstream: bytes
    encoded: encoder.EncodeResult
    point: Point
    calibrator: Calibrator
    target: Target | None
    search: SearchResult | None
    seconds: dict[str, float]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Per-tensor report rows (encoder rows + sensitivity, qp, slope, share of all bytes)."""
        return self.encoded.rows

    @property
    def holdout_fidelity(self) -> dict[str, Any]:
        return self.point.fidelity

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts of the run (no per-tensor rows)."""
        calibration = self.calibrator.calibration
        return {"bytes": self.encoded.total_bytes, "lmbda": self.point.lmbda, "kind": self.calibrator.kind,
                "method": self.calibrator.options.method, "target": self.target.describe() if self.target else None,
                "holdout_fidelity": _plain(self.point.fidelity),
                "calibration": {"description": getattr(calibration, "description", ""),
                                "optimise_samples": _count(calibration, "n_optimise", "optimise"),
                                "holdout_samples": _count(calibration, "n_holdout", "holdout")},
                "search": self.search.table() if self.search else None,
                "tensor_status": _status_counts(self.calibrator),
                "seconds": self.seconds}


def _count(calibration, attribute: str, feeds: str) -> int:
    value = getattr(calibration, attribute, None)
    return int(value) if value is not None else len(getattr(calibration, feeds))


def _status_counts(calibrator: Calibrator) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in calibrator.tensors.values():
        counts[state.status] = counts.get(state.status, 0) + 1
    return counts


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    plain = {k: (float(v) if isinstance(v, float) else v) for k, v in metrics.items()
             if isinstance(v, (int, float, bool, str))}
    if isinstance(metrics.get("groups"), dict):  # per sample rate (silero_vad)
        plain["groups"] = {label: _plain(group) for label, group in metrics["groups"].items()}
    return plain


def _calibration_progress(quiet: bool):
    if quiet:
        return None
    from nnlc.progress import Phase

    phases: dict[str, Phase] = {}

    def progress(done: int, total: int, label: str) -> None:
        phase = phases.get(label)
        if phase is None:
            phase = phases[label] = Phase(f"calibration {label}", total)
        phase.step(count=done - phase.done)
        if done >= total:
            phase.finish()
    return progress


def calibrate(model: onnx.ModelProto, calibration: str | CalibrationSet,
              calibration_options: CalibrationOptions | None = None,
              options: CalibratedOptions = CalibratedOptions()) -> Calibrator:
    """Loads the calibration inputs (when given as a source) and measures sensitivities and Hessians."""
    if isinstance(calibration, str):
        calibration = load_calibration(calibration, model, calibration_options, _calibration_progress(options.quiet))
    if not calibration.optimise or not calibration.holdout:
        raise NnlcError("calibration needs both optimisation and hold-out feeds (more samples, or a larger "
                        "holdout fraction)")
    return Calibrator(model, calibration, options)


def compress_calibrated(model: onnx.ModelProto, calibration: str | CalibrationSet,
                        calibration_options: CalibrationOptions | None = None,
                        options: CalibratedOptions = CalibratedOptions(), target: str | Target | None = None,
                        lmbda: float | None = None, carry_topology: bool = True,
                        calibrator: Calibrator | None = None) -> CalibratedResult:
    """The calibrated bitstream of `model` at `lmbda`, or the smallest one meeting `target` on the hold-out."""
    if target is not None and lmbda is not None:
        raise NnlcError("give a target or a lambda, not both")
    if lmbda is not None and not lmbda > 0:
        raise NnlcError(f"lambda must be positive, got {lmbda}")
    if lmbda is None and target is None:
        target = "transparent"
    if isinstance(target, str):
        target = parse_target(target)
    started = time.perf_counter()
    calibrator = calibrator or calibrate(model, calibration, calibration_options, options)
    setup = time.perf_counter() - started
    search = None
    if not calibrator.allocated:
        raise NnlcError("no tensor responded to the calibration inputs: nothing to allocate "
                        "(are the inputs all zero, or is every weight kept exact?)")
    if target is not None:
        probe = calibrator.holdout_fidelity({})
        check_target_fits(target, probe, calibrator.kind)
        params = sum(state.params for state in calibrator.allocated)
        start = allocation.predicted_lmbda(distortion_budget(target, calibrator.kind), params)

        def evaluate(value: float):
            point = calibrator.quantize(value, phase_label=f"tensors (lmbda {value:.3g})")
            return point.bits, point.fidelity, point

        search = search_lambda(evaluate, target, start, quiet=options.quiet)
        point = search.best.point
    else:
        point = calibrator.quantize(lmbda)
    searched = time.perf_counter() - started - setup
    encoded = calibrator.encode(point, carry_topology)
    total = time.perf_counter() - started
    return CalibratedResult(encoded.bitstream, encoded, point, calibrator, target, search,
                            {"setup": setup, "search": searched, "encode": total - setup - searched, "total": total})
