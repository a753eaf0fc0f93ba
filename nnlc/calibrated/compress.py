"""The calibrated stage: sensitivities, equal-slope steps, rate-constrained OPTQ, bitstream.

`Calibrator(model, calibration, options)` measures once what every rate point needs:
1. the original outputs on the optimisation and hold-out feeds;
2. per tensor, the output distortion when that tensor alone is rounded with a probe step:
   D_t = a_t * step^2 (the sensitivity a_t) — tensors whose perturbation breaks the outputs (NaN/inf)
   are kept exact, tensors the calibration inputs never exercise keep the data-free step;
3. per Conv/Gemm/MatMul/LSTM weight, H = E[x x^T] of its input rows (from the original network's
   activations, or `hessians="sequential"`: each layer's from the already-compressed layers before it).
`quantize(lmbda)` then gives every tensor its equal-slope step and integers (OPTQ with the rate term,
or RDO rounding where no H exists; lookup tables a step per row, `rows`; with dependent_quantization,
the layers' trellis OPTQ, `dependent`), `holdout_fidelity()` checks the hold-out and `encode()` writes
the bitstream (`encoding`: per-tensor QUANTIZED steps, mode 5 for tables with row steps, mode 6 for
dependent quantization). Options, per-tensor state and rate points are defined in `point`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from nnlc import encoder, onnx_io, quantization
from nnlc.calibrated import allocation, bias, dependent, encoding, optq, rows
from nnlc.calibrated.distortion import Reference, guess_kind
from nnlc.calibrated.layers import HessianAccumulator, Layer, find_layers
from nnlc.calibrated.point import CalibratedOptions, Point, TensorState  # noqa: F401 (re-exported)
from nnlc.calibrated.runner import WeightFedSession
from nnlc.progress import Phase



class Calibrator:
    """Measures sensitivities and Hessians once; `quantize(lmbda)` makes a rate point."""

    def __init__(self, model: onnx.ModelProto, calibration, options: CalibratedOptions = CalibratedOptions()):
        self.options = options
        self.model = model
        self.calibration = calibration
        self.kind = guess_kind(model) if options.kind == "auto" else options.kind
        start = time.perf_counter()
        self.plan = encoder.plan_tensors(model, options.default_qp, options.nonweight_qp,
                                         lossless_names=options.lossless_names)
        candidates = [item for item in self.plan if item.mode == encoder.QUANTIZED
                      and not getattr(item, "exact", False)]
        self.layers, tapped_model = find_layers(model)
        taps = sorted({tap for layer in self.layers.values() for tap in layer.all_taps})
        stateful = bool(getattr(calibration, "holdout_streams", None))
        self.lookup_tables = rows.lookup_tables(model, [
            item.record.name for item in candidates if item.record.graph_path == "" and item.record.name not in
            self.layers and item.record.storage == onnx_io.INITIALIZER]) if options.row_steps and not stateful else {}
        taps = sorted(set(taps) | set(self.lookup_tables.values()))
        feed_names = {name for feeds in calibration.optimise[:1] for name in feeds}
        taps = [tap for tap in taps if tap not in feed_names]
        self.records = {item.record.name: item.record for item in self.plan}
        # biases a layer's correction would change although they are coded raw (small): fed too, so the
        # hold-out sees the corrected values
        layer_biases = bias.layer_biases(model, self.layers, self.records) if options.bias_correction else {}
        planned = {item.record.name: item for item in self.plan}
        raw_biases = {name for name, _ in layer_biases.values() if planned[name].mode == encoder.RAW
                      and planned[name].record.array.dtype == np.float32
                      and planned[name].lossless_reason in ("", "tiny tensor")}
        self.session = WeightFedSession(tapped_model, [item.record.name for item in candidates] + sorted(raw_biases),
                                        taps, threads=options.threads)
        self.raw_biases = {name for name in raw_biases if name in self.session.fed}
        self.tensors: dict[str, TensorState] = {}
        for item in candidates:
            state = TensorState(item.record.name, item.record.role, int(item.record.array.size))
            if item.record.name not in self.session.fed:
                state.status = "not fed"  # cannot be varied in onnxruntime: keeps the data-free step
            self.tensors[state.name] = state
        self.layers = {name: layer for name, layer in self.layers.items() if name in self.session.fed}
        self.optimise_feeds = list(calibration.optimise)
        self.lookup_tables = {name: index for name, index in self.lookup_tables.items() if name in self.session.fed}
        if self.lookup_tables:
            counts = rows.count_reads(self.lookup_tables, self.optimise_feeds,
                                      lambda feed, names: self.session.run(feed, None, names),
                                      {name: self.records[name].array.shape[0] for name in self.lookup_tables})
            for name, table_counts in counts.items():
                self.tensors[name].row_probabilities = rows.row_probabilities(table_counts, options.row_prior)
                self.tensors[name].rows_read = int(np.sum(table_counts > 0))
        self.holdout_feeds = list(calibration.holdout)
        self.sensitivity_feeds = self.optimise_feeds[:max(1, options.sensitivity_feeds)]
        # stateful networks are checked running free over whole hold-out clips, as in use (and as the
        # benchmarks measure them): teacher-forced frames would hide the error fed back through the state
        self.holdout_streams = list(getattr(calibration, "holdout_streams", None) or [])
        holdout_inputs = [{} for _ in self.holdout_streams] if self.holdout_streams else self.holdout_feeds
        # streams at several sample rates (silero_vad's branches): the target must hold at each rate
        groups = [",".join(f"{k}={int(np.ravel(v)[0])}" for k, v in sorted(s.constants.items()))
                  for s in self.holdout_streams] if self.holdout_streams else None
        gallery = None
        if self.kind == "embedding" and not self.holdout_streams and options.neighbour_gallery:
            gallery = Reference(self.kind, self.optimise_feeds, self.session.run_all(self.optimise_feeds))
        self.reference_holdout = Reference(self.kind, holdout_inputs, self.holdout_outputs({}), groups, gallery)
        # their sensitivities too: an error in a recurrent weight grows through the fed-back state
        self.probe_streams = list(getattr(calibration, "optimise_streams", None) or []) if self.holdout_streams else []
        probe_inputs = [{} for _ in self.probe_streams] if self.probe_streams else self.sensitivity_feeds
        self.reference_probe = Reference(self.kind, probe_inputs, self.probe_outputs({}))
        self.hessians: dict[str, np.ndarray] = {}
        self.input_means: dict[str, np.ndarray] = {}
        self._probes: dict[str, tuple[np.ndarray, float]] = {}
        if options.method == "optq" and options.hessians == "original":
            self.hessians = self._collect_hessians(list(self.layers.values()), {}, self.input_means)
        # layer -> (bias tensor, scale) for bias correction
        self.biases = {name: found for name, found in layer_biases.items() if name in self.input_means and (
            found[0] in self.raw_biases or (found[0] in self.tensors and self.tensors[found[0]].status != "not fed"))}
        self._measure_sensitivities()
        self.setup_seconds = time.perf_counter() - start

    def _outputs(self, streams: list, feeds: list, weights: Mapping[str, np.ndarray]) -> list[list[np.ndarray]]:
        if streams:
            return [self.session.run_stream(stream, weights) for stream in streams]
        return self.session.run_all(feeds, weights)

    def holdout_outputs(self, weights: Mapping[str, np.ndarray]) -> list[list[np.ndarray]]:
        """The network's outputs on the hold-out (free-running streams for stateful networks)."""
        return self._outputs(self.holdout_streams, self.holdout_feeds, weights)

    def holdout_fidelity(self, weights: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The hold-out metrics under `weights` (with the optimisation sentences as the neighbour
        gallery of embeddings, see `Reference`)."""
        gallery = self.session.run_all(self.optimise_feeds, weights) if self.reference_holdout.gallery else None
        return self.reference_holdout.fidelity(self.holdout_outputs(weights), gallery)

    def probe_outputs(self, weights: Mapping[str, np.ndarray]) -> list[list[np.ndarray]]:
        """The network's outputs on the sensitivity feeds (free-running optimisation clips when stateful)."""
        return self._outputs(self.probe_streams, self.sensitivity_feeds, weights)

    # -- measurements -------------------------------------------------------------------------------

    def _collect_hessians(self, layers: list[Layer], weights: Mapping[str, np.ndarray],
                          means: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        accumulators = {layer.name: HessianAccumulator(layer) for layer in layers}
        taps = sorted({tap for layer in layers for tap in layer.all_taps if tap in self.session.taps})
        with Phase("activations", len(self.optimise_feeds), self.options.quiet) as phase:
            for feeds in self.optimise_feeds:
                values = dict(zip(taps, self.session.run(feeds, weights, taps), strict=True)) if taps else {}
                values.update(feeds)
                for accumulator in accumulators.values():
                    accumulator.add(values)
                phase.step()
        if means is not None:
            means.update({name: acc.input_mean() for name, acc in accumulators.items() if acc.count})
        return {name: acc.mean() for name, acc in accumulators.items() if acc.count}

    def _probe(self, name: str) -> tuple[np.ndarray, float]:
        """The tensor rounded with its probe step (rms * probe_step_fraction), and that step."""
        if name in self._probes:
            return self._probes[name]
        array = self.records[name].array.astype(np.float32)
        rms = float(np.sqrt(np.mean(np.square(array, dtype=np.float64))))
        step = quantization.usable_step(array, max(rms * self.options.probe_step_fraction, 1e-30))
        probe = quantization.dequantize(quantization.quantize(array, step), step).reshape(array.shape)
        self._probes[name] = (probe, float(step))
        return self._probes[name]

    def _measure_sensitivities(self) -> None:
        measured = [state for state in self.tensors.values() if state.status != "not fed"]
        with Phase("sensitivities", len(measured), self.options.quiet) as phase:
            for state in measured:
                probe, step = self._probe(state.name)
                outputs = self.probe_outputs({state.name: probe})
                distortion = self.reference_probe.distortion(outputs)
                original = self.records[state.name].array.astype(np.float64)
                layer = self.layers.get(state.name)
                hessian = self.hessians.get(state.name)
                if layer is not None and hessian is not None:
                    state.probe_error = optq.layer_error(layer.to_matrices(original), layer.to_matrices(probe), hessian)
                else:
                    state.probe_error = float(np.sum((probe - original) ** 2))
                if not math.isfinite(distortion):
                    state.status = "breaks when perturbed"
                elif distortion <= 1e-14 or state.probe_error <= 0:
                    state.status = "not exercised"
                else:
                    state.rounding_sensitivity = distortion / step ** 2
                    state.sensitivity = state.rounding_sensitivity
                    if layer is not None and hessian is not None and self.options.sensitivity == "quantizer":
                        # OPTQ shapes the error away from the input's strong directions: the tensor's
                        # sensitivity is that of the quantizer that will be used, at the probe step
                        integers = optq.quantize_layer(layer.to_matrices(original), step, hessian,
                                                       act_order=self.options.act_order, damping=self.options.damping)
                        compensated = quantization.dequantize(layer.from_matrices(integers), np.float32(step))
                        compensated = compensated.reshape(original.shape)
                        optq_distortion = self.reference_probe.distortion(
                            self.probe_outputs({state.name: compensated}))
                        if math.isfinite(optq_distortion) and optq_distortion > 1e-14:
                            state.quantizer_sensitivity = optq_distortion / step ** 2
                    if self.options.sensitivity == "quantizer" and state.quantizer_sensitivity is not None:
                        state.sensitivity = state.quantizer_sensitivity
                phase.step(state.name)

    # -- rate points --------------------------------------------------------------------------------

    @property
    def allocated(self) -> list[TensorState]:
        return [state for state in self.tensors.values() if state.sensitivity is not None]

    def steps(self, lmbda: float) -> dict[str, tuple[int, float]]:
        allocated = self.allocated
        if self.options.method == "global":  # one step for all: the equal-slope step of their sum
            total_params = sum(s.params for s in allocated)
            total_sensitivity = sum(s.sensitivity for s in allocated)
            step = allocation.allocated_step(lmbda, total_params, total_sensitivity)
            chosen = allocation.snap_to_qp(step) if self.options.step_grid == "qp" else (0, step)
            return {s.name: chosen for s in allocated}
        max_steps = {s.name: 4.0 * float(np.max(np.abs(self.records[s.name].array))) + 1e-30 for s in allocated}
        chosen = allocation.steps_for(lmbda, {s.name: s.params for s in allocated},
                                      {s.name: s.sensitivity for s in allocated}, max_steps,
                                      snap=self.options.step_grid == "qp")
        if self.options.rate_term and self.options.method == "optq" and self.options.rate_step_scale != 1.0:
            chosen = {name: (qp, step * self.options.rate_step_scale) for name, (qp, step) in chosen.items()}
        return chosen

    def _distortion_weight(self, state: TensorState, hessian: np.ndarray | None) -> float:
        """Model distortion per unit of layer error tr(dW H dW^T) (||dW||^2 without H), from the probe."""
        probe, step = self._probe(state.name)
        original = self.records[state.name].array.astype(np.float64)
        layer = self.layers.get(state.name)
        if layer is not None and hessian is not None:
            error = optq.layer_error(layer.to_matrices(original), layer.to_matrices(probe), hessian)
        else:
            error = float(np.sum((probe - original) ** 2))
        return state.rounding_sensitivity * step ** 2 / max(error, 1e-300)

    def _quantize_tensor(self, state: TensorState, step32: np.float32, lmbda: float,
                         hessian: np.ndarray | None, values: np.ndarray | None = None) -> np.ndarray:
        values = self.records[state.name].array.astype(np.float64) if values is None else values
        layer = self.layers.get(state.name)
        use_optq = self.options.method == "optq"
        rate = lmbda if (use_optq and self.options.rate_term) else 0.0
        if layer is None or not use_optq:
            hessian = None
        weight = self._distortion_weight(state, hessian) if rate > 0 else 1.0
        if hessian is not None:
            matrices = layer.to_matrices(values)
            integers = optq.quantize_layer(matrices, float(step32), hessian, act_order=self.options.act_order,
                                           damping=self.options.damping)
            for _ in range(self.options.length_passes if rate > 0 else 0):
                lengths = optq.code_lengths_for(integers)
                integers = optq.quantize_layer(matrices, float(step32), hessian, rate, weight, lengths,
                                               self.options.act_order, self.options.damping)
            return layer.from_matrices(integers).astype(np.int64)
        integers = quantization.quantize(values, step32)
        for _ in range(self.options.length_passes if rate > 0 else 0):  # RDO rounding: H = I
            lengths = optq.code_lengths_for(integers)
            integers = optq.quantize_layer(values.reshape(1, 1, -1), float(step32), None, rate, weight,
                                           lengths).reshape(values.shape)
        return integers

    def quantize(self, lmbda: float, phase_label: str | None = None) -> Point:
        """Steps and integers of every allocated tensor at `lmbda`, with estimated bits and hold-out fidelity."""
        start = time.perf_counter()
        chosen = self.steps(lmbda)
        steps: dict[str, float] = {}
        symbols: dict[str, np.ndarray] = {}
        decoded: dict[str, np.ndarray] = {}
        grouped: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        dependents: dict[str, tuple[int, bool]] = {}
        sequential = self.options.method == "optq" and self.options.hessians == "sequential"
        allocated = {s.name for s in self.allocated}
        biases = {name: found for name, found in self.biases.items() if name in allocated
                  and (found[0] in allocated or found[0] in self.raw_biases)
                  and self.options.method == "optq" and not sequential}
        shifts: dict[str, np.ndarray] = {}  # bias tensor -> the correction its layer asks for
        # with bias correction, the layers first: their biases are quantized after the shift is known
        last = math.inf if biases else -1
        order = sorted(self.allocated, key=lambda s: (self.layers[s.name].order if s.name in self.layers else last))
        stages = np.array_split(np.arange(len(order)), max(1, self.options.sequential_stages)) if sequential \
            else [np.arange(len(order))]
        with Phase(phase_label or f"tensors (lmbda {lmbda:.3g})", len(order), self.options.quiet,
                   lazy=True) as phase:
            for stage in stages:
                members = [order[i] for i in stage]
                hessians = self.hessians
                if sequential:
                    layers = [self.layers[s.name] for s in members if s.name in self.layers]
                    hessians = self._collect_hessians(layers, decoded) if layers else {}
                for state in members:
                    record = self.records[state.name]
                    if state.row_probabilities is not None and self.options.method != "global":
                        group_steps, row_groups, integers = self._quantize_rows(state, lmbda)
                        grouped[state.name] = (group_steps, row_groups)
                        steps[state.name] = float(np.exp(np.mean(np.log(group_steps[row_groups]))))
                        symbols[state.name] = integers
                        decoded[state.name] = quantization.dequantize_rows(integers, group_steps, row_groups)
                        phase.step(state.name)
                        continue
                    values = record.array.astype(np.float64)
                    if state.name in shifts:
                        values = values + shifts[state.name]
                    hessian = hessians.get(state.name)
                    if state.name in biases and hessian is not None and self.options.centred_hessians:
                        hessian = bias.centred(hessian, self.input_means[state.name])
                    layer = self.layers.get(state.name)
                    trellis = (self.options.dependent_quantization and self.options.method == "optq"
                               and hessian is not None and layer is not None and state.name not in biases)
                    factor = self.options.dependent_step_factor if trellis else 1.0
                    step32 = quantization.usable_step(values.astype(np.float32), factor * chosen[state.name][1])
                    if trellis:  # OPTQ with dependent quantization, mode 6
                        matrices = dependent.quantize_layer(layer.to_matrices(values), float(step32), hessian,
                                                            self.options.damping)
                        symbols[state.name] = layer.from_matrices(matrices).astype(np.int64)
                        steps[state.name] = float(step32)
                        dependents[state.name] = (layer.columns, layer.transposed)
                        decoded[state.name] = layer.from_matrices(dependent.reconstruct_matrices(matrices, step32))
                        phase.step(state.name)
                        continue
                    integers = self._quantize_tensor(state, step32, lmbda, hessian, values)
                    if state.name in biases:
                        bias_name, scale = biases[state.name]
                        weight = quantization.dequantize(integers, step32).reshape(record.array.shape)
                        shifts[bias_name] = bias.bias_shift(layer, values, weight, self.input_means[state.name], scale)
                    steps[state.name] = float(step32)
                    symbols[state.name] = integers.reshape(record.array.shape)
                    decoded[state.name] = quantization.dequantize(integers, step32).reshape(record.array.shape)
                    phase.step(state.name)
        adjusted = {name: (self.records[name].array.astype(np.float64) + shift).astype(np.float32)
                    for name, shift in shifts.items() if name in self.raw_biases}  # coded raw, corrected
        decoded.update(adjusted)
        metrics = self.holdout_fidelity(decoded)
        bits = self.estimated_bits(symbols, grouped)
        return Point(lmbda, bits, metrics, steps, symbols, time.perf_counter() - start, grouped, adjusted, dependents)

    def _quantize_rows(self, state: TensorState, lmbda: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(group steps, row groups, integers) of a lookup table: equal-slope steps per row, rounded."""
        array = self.records[state.name].array.astype(np.float32)
        row_size = max(1, array.size // max(1, array.shape[0]))
        max_step = 4.0 * float(np.max(np.abs(array))) + 1e-30
        table_step = allocation.allocated_step(lmbda, state.params, state.sensitivity)
        max_step = min(max_step, self.options.row_max_coarsening * table_step)
        per_row = rows.row_steps(lmbda, state.sensitivity, row_size, state.row_probabilities, max_step)
        group_steps, row_groups = rows.group_rows(per_row, snap=self.options.step_grid == "qp")
        integers, usable = rows.quantize_rows(array, group_steps, row_groups)
        return usable, row_groups, integers

    def planned(self, point: Point) -> list[encoder.CodedTensor]:
        """The encoder's plan with the point's steps and integers in place of the data-free ones."""
        return encoding.planned(self, point)

    def estimated_bits(self, symbols: Mapping[str, np.ndarray],
                       grouped: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> float:
        """Estimated size in bits at these integers (`encoding.estimated_bits`)."""
        return encoding.estimated_bits(self, symbols, grouped)

    def encode(self, point: Point, carry_topology: bool = True, progress=None) -> encoder.EncodeResult:
        """The bitstream of a rate point, with per-tensor report rows (`encoding.encode`)."""
        return encoding.encode(self, point, carry_topology, progress)


optq_plan_bits = encoding.optq_plan_bits  # noqa: E305 (re-exported)
