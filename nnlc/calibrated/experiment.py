"""The calibrated stage as an experiment: one rate point (or target) of a config, in a workdir.

`run_calibrated(config, workdir)` (called by experiments/main.py when `config.stages == "calibrated"`)
writes `config.json`, `model.nnlc`, `original.onnx`, `decoded.onnx` (decoded by the standalone
decoder), `tensors.{md,csv,json}` + `bits_vs_sensitivity.png` and, last, `result.json`: bytes, ratio,
bits/param, lambda, the hold-out calibration fidelity and the fidelity on the benchmark inputs
(`nnlc.fidelity`, DESIGN §6; other photos/clips/sentences than the calibration ones), wall time and
peak memory. `launch.report` reads these like the learned runs' results.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import time
from typing import Any

import ml_collections

from nnlc import onnx_io
from nnlc.calibrated.analysis import write_analysis
from nnlc.calibrated.api import compress_calibrated
from nnlc.calibrated.compress import CalibratedOptions
from nnlc.calibration import CalibrationOptions
from nnlc.calibration.base import parse_floats
from nnlc.decoder.files import atomic_write


def calibrated_config(model: str, source: str, evaluation: str, lmbda: float) -> ml_collections.ConfigDict:
    """Defaults of a calibrated-stage config; list values (image_mean) are ';'-separated strings."""
    config = ml_collections.ConfigDict()
    config.model = model
    config.stages = "calibrated"
    config.lmbda = lmbda
    config.target = ""  # e.g. "transparent" or "kl<=0.005": search lambda instead of using config.lmbda
    config.calibration = ml_collections.ConfigDict({
        "source": source, "samples": 256, "holdout_fraction": 0.25, "seed": 0, "image_size": 0,
        "image_mean": "", "image_std": "", "layout": "", "sample_rate": 0, "tokenizer": "", "max_length": 128})
    config.calibrated = ml_collections.ConfigDict({
        "method": "optq", "rate_term": False, "hessians": "original", "kind": "auto", "sensitivity_feeds": 8,
        "row_steps": True, "row_max_coarsening": 2.0, "bias_correction": False, "dependent_quantization": False,
        "probe_step_fraction": 1.0 / 16.0, "default_qp": -38, "nonweight_qp": -75, "threads": 2})
    config.blockwise = ml_collections.ConfigDict({  # stages="blockwise" (nnlc.blockwise.train)
        "steps": 100, "learning_rate": 5e-3, "target_blocks": 8, "init": "residual", "rate_weight": 1.0})
    config.evaluation = evaluation  # nnlc.fidelity kind of the final check on the benchmark inputs
    config.evaluation_options = ml_collections.ConfigDict()
    return config


def calibration_options(config: Any) -> CalibrationOptions:
    c = config.calibration
    return CalibrationOptions(samples=int(c.samples), holdout_fraction=float(c.holdout_fraction), seed=int(c.seed),
                              image_size=int(c.image_size) or None,
                              image_mean=parse_floats(c.image_mean, "image_mean"),
                              image_std=parse_floats(c.image_std, "image_std"), layout=c.layout or None,
                              sample_rate=int(c.sample_rate) or None, tokenizer=c.tokenizer or None,
                              max_length=int(c.max_length))


def calibrated_options(config: Any, quiet: bool = False) -> CalibratedOptions:
    c = config.calibrated
    return CalibratedOptions(kind=c.kind, method=c.method, rate_term=bool(c.rate_term), hessians=c.hessians,
                             row_steps=bool(c.get("row_steps", True)),
                             row_max_coarsening=float(c.get("row_max_coarsening", 2.0)),
                             bias_correction=bool(c.get("bias_correction", False)),
                             dependent_quantization=bool(c.get("dependent_quantization", False)),
                             sensitivity_feeds=int(c.sensitivity_feeds), probe_step_fraction=float(c.probe_step_fraction),
                             default_qp=int(c.default_qp), nonweight_qp=int(c.nonweight_qp), threads=int(c.threads),
                             quiet=quiet)


def _write_json(path: str, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=1, default=float).encode())


START_FILE = "start.npz"  # the point's steps and integers, for the end-to-end trainer (nnlc.training.start)


STAGES = ("calibrated", "blockwise", "calibrated+end_to_end", "blockwise+end_to_end", "end_to_end")


def run_stages(config: Any, workdir: str, quiet: bool = False) -> dict:
    """The stages `config.stages` names, each starting from the one before (issue 12, deliverable 3).

    "calibrated" / "blockwise": `run_calibrated` in `workdir`. "calibrated+end_to_end" /
    "blockwise+end_to_end": that stage in `workdir/<stage>` (its own result.json and start.npz; a
    finished one is reused), then the end-to-end trainer (`nnlc.training.loop`) in `workdir` from its
    point (`config.start_from`; the config holds the trainer's keys too, with scalar decoders).
    "end_to_end": the trainer alone, from its own start.
    """
    stages = config.get("stages", "end_to_end")
    if stages not in STAGES:
        raise ValueError(f"stages={stages!r}: one of {', '.join(STAGES)}")
    from nnlc.training.loop import train_and_evaluate

    first, _, then = stages.partition("+")
    if first == "end_to_end":
        return train_and_evaluate(config, workdir)
    if not then:
        return run_calibrated(config, workdir, quiet, stage=first)
    start_dir = os.path.join(workdir, first)
    start_result = os.path.join(start_dir, "result.json")
    if os.path.exists(start_result):
        with open(start_result) as handle:
            before = json.load(handle)
    else:
        before = run_calibrated(config, start_dir, quiet, stage=first)
    config.start_from = os.path.join(start_dir, START_FILE)
    result = train_and_evaluate(config, workdir)
    result["start_stage"] = {key: before.get(key) for key in ("stage", "lmbda", "bytes", "bits_per_param",
                                                              "evaluation", "compress_s")}
    _write_json(os.path.join(workdir, "result.json"), result)
    return result


def run_calibrated(config: Any, workdir: str, quiet: bool = False, stage: str | None = None) -> dict:
    """One calibrated (or block-wise: `stage`, default `config.stages`) point of `config` in
    `workdir`; returns (and writes, last) result.json, after start.npz."""
    from nnlc.decoder import decode_bitstream
    from nnlc.training.evaluation import evaluate
    from nnlc.training.start import save_start

    stage = stage or config.stages
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, "config.json"), config.to_dict())
    started = time.perf_counter()
    model = onnx_io.load_model(config.model)
    result = compress_calibrated(model, config.calibration.source, calibration_options(config),
                                 calibrated_options(config, quiet), target=config.target or None,
                                 lmbda=None if config.target else float(config.get("start_lmbda", config.lmbda)))
    blockwise = None
    if stage == "blockwise":
        from nnlc.blockwise.train import BlockwiseOptions, refine, summary as block_summary

        b = config.blockwise
        refined, reports = refine(result.calibrator, result.point,
                                  BlockwiseOptions(steps=int(b.steps), learning_rate=float(b.learning_rate),
                                                   target_blocks=int(b.target_blocks), init=b.init,
                                                   rate_weight=float(b.rate_weight), quiet=quiet),
                                  checkpoint_dir=os.path.join(workdir, "blocks"))
        blockwise = {"calibrated_bytes": result.encoded.total_bytes, "calibrated_holdout_fidelity":
                     {k: v for k, v in result.point.fidelity.items() if isinstance(v, (int, float, bool))},
                     "blocks": block_summary(reports)}
        encoded = result.calibrator.encode(refined)
        result = dataclasses.replace(result, bitstream=encoded.bitstream, encoded=encoded, point=refined)
    elif stage != "calibrated":
        raise ValueError(f"stage {stage!r}: calibrated or blockwise here (end_to_end: the trainer)")
    compress_s = time.perf_counter() - started
    atomic_write(os.path.join(workdir, "model.nnlc"), result.bitstream)
    save_start(os.path.join(workdir, START_FILE), result.point.start_steps(), result.point.start_symbols())
    decoded = decode_bitstream(result.bitstream)
    atomic_write(os.path.join(workdir, "decoded.onnx"), decoded.SerializeToString())
    original_path = os.path.join(workdir, "original.onnx")
    if not os.path.exists(original_path):
        atomic_write(original_path, model.SerializeToString())
    summary = result.summary()
    write_analysis(workdir, result.rows, summary)
    float_bytes = sum(4 * row["params"] for row in result.rows if row["mode"] != "integer")
    float_params = float_bytes // 4
    output = {"stage": stage, "lmbda": result.point.lmbda, "bytes": result.encoded.total_bytes,
              "float_bytes": float_bytes, "ratio": result.encoded.total_bytes / max(1, float_bytes),
              "bits_per_param": 8 * result.encoded.total_bytes / max(1, float_params),
              "holdout_fidelity": summary["holdout_fidelity"], "calibration": summary["calibration"],
              "search": summary["search"], "tensor_status": summary["tensor_status"],
              "compress_s": compress_s, "seconds": summary["seconds"], "blockwise": blockwise}
    output["evaluation"] = evaluate(config, original_path, os.path.join(workdir, "decoded.onnx"))
    output["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    _write_json(os.path.join(workdir, "result.json"), output)
    return output
