"""`nnlc` command line: compress, decompress and inspect.

  nnlc compress IN.onnx -o OUT.nnlc [--qp=-38 | --bits_per_param=6] [--no_topology] [--lossless=NAME,...]
  nnlc compress IN.onnx -o OUT.nnlc --calibrate=SOURCE [--eval=classifier|embedding|vad|mse]
        [--target=transparent | --target=kl<=0.005 | --lmbda=X] [--method=optq|allocation]
  nnlc analyze IN.onnx --calibrate=SOURCE -o DIR [--target=... | --lmbda=X]
  nnlc decompress IN.nnlc -o OUT.onnx [--structure=ORIG.onnx] [--quantized] [--external_data] [--max_...=N]
  nnlc inspect IN.nnlc [--json] [--max_...=N]

A thin absl main: parses flags and calls the library.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

from absl import app, flags

from nnlc.decoder.__main__ import LIMIT_HELP, limits_from
from nnlc.decoder.decode import Limits
from nnlc.errors import NnlcError

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "Output path.", short_name="o")
flags.DEFINE_integer("qp", None, "NNR-style quantization parameter: step = (4 + (qp & 3)) * 2**((qp >> 2) - 2). "
                     "Default -38 when --bits_per_param is not given.")
flags.DEFINE_float("bits_per_param", None, "Target size in bits per float parameter (picks the finest qp that fits).")
flags.DEFINE_integer("nonweight_qp", -75, "qp of 1-D tensors (biases, normalisation).")
flags.DEFINE_bool("no_topology", False, "Leave the ONNX graph out of the bitstream (decoding then needs --structure).")
flags.DEFINE_list("lossless", [], "Names (or regular expressions) of tensors to store exactly.")
flags.DEFINE_string("report", None, "compress: also write the per-tensor report as JSON here.")
flags.DEFINE_string("structure", None, "decompress: the original ONNX model, for bitstreams without topology.")
flags.DEFINE_bool("quantized", False, "decompress: integer weights + DequantizeLinear instead of float weights.")
flags.DEFINE_bool("external_data", False, "decompress: write tensors to OUT.onnx.data (always done from 2 GiB).")
flags.DEFINE_bool("json", False, "inspect: print JSON instead of a table.")
for _field in dataclasses.fields(Limits):
    flags.DEFINE_integer(_field.name, _field.default,
                         f"decompress, inspect: {LIMIT_HELP.get(_field.name, _field.name)}.")
flags.DEFINE_bool("quiet", False, "No progress output.")
# calibrated mode (nnlc.calibrated, nnlc.calibration)
flags.DEFINE_string("calibrate", None, "Calibration inputs: PATH.npz, a folder of images or wavs, PATH.txt (with "
                    "--tokenizer), package.module:function, or a built-in source: images, audio, text, gaussian.")
flags.DEFINE_enum("eval", "auto", ["auto", "classifier", "embedding", "vad", "mse"],
                  "Distortion and fidelity metrics of the model's kind (auto: from the graph's inputs).")
flags.DEFINE_string("target", None, "Fidelity on the hold-out calibration split: 'transparent' (default with "
                    "--calibrate and no --lmbda), or bounds such as 'kl<=0.005', 'cosine>=0.999', joined by commas.")
flags.DEFINE_float("lmbda", None, "One rate point: distortion per bit of the equal-slope allocation.")
flags.DEFINE_enum("method", "optq", ["optq", "allocation"], "Calibrated quantizer: OPTQ error compensation at the "
                  "allocated steps, or rounding at the allocated steps.")
flags.DEFINE_bool("rate_term", False, "OPTQ minimises error + lambda * code length (else error only).")
flags.DEFINE_enum("hessians", "original", ["original", "sequential"], "Layer Hessians from the original "
                  "network's activations, or from the already-compressed layers before each layer.")
flags.DEFINE_bool("row_steps", True, "Lookup tables (Gather on axis 0, e.g. word embeddings): a step per row from "
                  "how often the calibration inputs read it (bitstream 1.3 mode 5); else one step per table.")
flags.DEFINE_float("row_max_coarsening", 2.0, "With --row_steps: no row coarser than this times the table's own step.")
flags.DEFINE_bool("dependent_quantization", False, "Layers with a Hessian: OPTQ with dependent (trellis) quantization, "
                  "two quantizers chosen by a 4-state machine along each row (bitstream 1.4 mode 6).")
flags.DEFINE_bool("bias_correction", False, "OPTQ on centred layer inputs, with each layer's mean output shift moved "
                  "into its bias.")
flags.DEFINE_integer("samples", 256, "Calibration samples (before the hold-out split).")
flags.DEFINE_float("holdout_fraction", 0.25, "Share of the calibration samples kept to check fidelity.")
flags.DEFINE_integer("seed", 0, "Seed of the calibration crops, frames and split.")
flags.DEFINE_integer("image_size", None, "Image side in pixels (default: the input's fixed size, else 224).")
flags.DEFINE_list("image_mean", None, "Per-channel mean on pixels in [0, 1] (default ImageNet's).")
flags.DEFINE_list("image_std", None, "Per-channel std on pixels in [0, 1] (default ImageNet's).")
flags.DEFINE_enum("layout", None, ["nchw", "nhwc"], "Image layout (default: from the input's channel dim).")
flags.DEFINE_integer("sample_rate", None, "Audio sample rate in Hz (default 16000).")
flags.DEFINE_string("tokenizer", None, "tokenizer.json (Hugging Face tokenizers) or WordPiece vocab.txt for text.")
flags.DEFINE_integer("max_length", 128, "Text: tokens per sentence at most.")
flags.DEFINE_integer("threads", 2, "onnxruntime threads of the calibrated mode.")

COMMANDS = ("compress", "decompress", "inspect", "analyze")
USAGE = "usage: nnlc {compress,decompress,inspect,analyze} INPUT [-o OUTPUT] [flags]; see nnlc --helpfull"


def _need_output() -> str:
    if not FLAGS.output:
        raise NnlcError("missing -o/--output")
    return FLAGS.output


def _progress(label: str):
    from nnlc.decoder.files import progress_printer

    printer = progress_printer(label, FLAGS.quiet)
    if printer is not None or FLAGS.quiet:
        return printer
    last = [-1]

    def every_tenth(done: int, total: int, name: str) -> None:  # not a terminal: a line per 10%
        tenth = 10 * done // max(1, total)
        if tenth != last[0]:
            last[0] = tenth
            print(f"{label} {done}/{total}", file=sys.stderr, flush=True)

    return every_tenth


def calibration_options():
    from nnlc.calibration import CalibrationOptions
    from nnlc.calibration.base import parse_floats

    return CalibrationOptions(samples=FLAGS.samples, holdout_fraction=FLAGS.holdout_fraction, seed=FLAGS.seed,
                              image_size=FLAGS.image_size,
                              image_mean=parse_floats(FLAGS.image_mean, "--image_mean"),
                              image_std=parse_floats(FLAGS.image_std, "--image_std"), layout=FLAGS.layout,
                              sample_rate=FLAGS.sample_rate, tokenizer=FLAGS.tokenizer, max_length=FLAGS.max_length)


def calibrated_options():
    from nnlc.calibrated.compress import CalibratedOptions

    if not FLAGS.row_max_coarsening >= 1.0:
        raise NnlcError(f"--row_max_coarsening must be at least 1, got {FLAGS.row_max_coarsening}")
    return CalibratedOptions(kind=FLAGS.eval, method=FLAGS.method, rate_term=FLAGS.rate_term, hessians=FLAGS.hessians,
                             row_steps=FLAGS.row_steps, row_max_coarsening=FLAGS.row_max_coarsening,
                             bias_correction=FLAGS.bias_correction,
                             dependent_quantization=FLAGS.dependent_quantization,
                             nonweight_qp=FLAGS.nonweight_qp, lossless_names=tuple(FLAGS.lossless),
                             threads=FLAGS.threads, quiet=FLAGS.quiet)


def _peak_memory_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _run_calibrated(input_path: str):
    from nnlc import onnx_io
    from nnlc.calibrated.api import compress_calibrated

    if FLAGS.qp is not None or FLAGS.bits_per_param is not None:
        raise NnlcError("--qp / --bits_per_param are the data-free mode: with --calibrate give --target or --lmbda")
    model = onnx_io.load_model(input_path)
    return compress_calibrated(model, FLAGS.calibrate, calibration_options(), calibrated_options(),
                               target=FLAGS.target, lmbda=FLAGS.lmbda, carry_topology=not FLAGS.no_topology)


def _print_calibrated(input_path: str, destination: str, result, seconds: float) -> None:
    summary = result.summary()
    fidelity = result.point.fidelity
    shown = (result.target.summary(fidelity) if result.target is not None else
             ", ".join(f"{k} {v:.4g}" for k, v in fidelity.items() if isinstance(v, float)))
    params = sum(row["params"] for row in result.rows if row["mode"] != "integer")
    original = sum(row["params"] * 4 for row in result.rows if row["mode"] != "integer")
    print(f"{input_path}: calibrated on {summary['calibration']['optimise_samples']} samples "
          f"({summary['calibration']['holdout_samples']} held out), lmbda {result.point.lmbda:.4g}")
    print(f"hold-out fidelity: {shown}, transparent={fidelity.get('transparent')}")
    print(f"-> {destination}: {result.encoded.total_bytes} bytes ({100 * result.encoded.total_bytes / max(1, original):.1f}% "
          f"of float32, {8 * result.encoded.total_bytes / max(1, params):.3f} bits/param) in {seconds:.1f} s, "
          f"peak memory {_peak_memory_mib():.0f} MiB")


def analyze(input_path: str) -> None:
    from nnlc.calibrated.analysis import write_analysis

    output = _need_output()
    if not FLAGS.calibrate:
        raise NnlcError("analyze needs --calibrate=SOURCE")
    start = time.perf_counter()
    result = _run_calibrated(input_path)
    written = write_analysis(output, result.rows, result.summary())
    _print_calibrated(input_path, output, result, time.perf_counter() - start)
    print("wrote " + ", ".join(written))


def compress(input_path: str) -> None:
    from nnlc import encoder, onnx_io
    from nnlc.decoder.files import atomic_write

    output = _need_output()
    if FLAGS.calibrate:
        start = time.perf_counter()
        result = _run_calibrated(input_path)
        atomic_write(output, result.bitstream)
        if FLAGS.report:
            atomic_write(FLAGS.report, json.dumps({**result.summary(), "tensors": result.rows}, indent=1,
                                                  default=float).encode())
        _print_calibrated(input_path, output, result, time.perf_counter() - start)
        return
    if FLAGS.target is not None or FLAGS.lmbda is not None:
        raise NnlcError("--target and --lmbda need calibration inputs: add --calibrate=SOURCE")
    if FLAGS.qp is not None and FLAGS.bits_per_param is not None:
        raise NnlcError("give --qp or --bits_per_param, not both")
    start = time.perf_counter()
    model = onnx_io.load_model(input_path)
    result = encoder.compress_model(model, qp=-38 if FLAGS.qp is None else FLAGS.qp,
                                    bits_per_param=FLAGS.bits_per_param, nonweight_qp=FLAGS.nonweight_qp,
                                    lossless_names=FLAGS.lossless, carry_topology=not FLAGS.no_topology,
                                    progress=_progress("coding"))
    atomic_write(output, result.bitstream)
    if FLAGS.report:
        atomic_write(FLAGS.report, json.dumps({"bytes": result.total_bytes, "topology_bytes": result.topology_bytes,
                                               "tensors": result.rows}, indent=1).encode())
    params = sum(row["params"] for row in result.rows if row["mode"] != "integer")
    original = sum(r.array.nbytes for r in onnx_io.find_float_tensors(model).values())
    print(f"{input_path}: {original} bytes of float weights -> {output}: {result.total_bytes} bytes "
          f"({100 * result.total_bytes / max(1, original):.1f}%, {8 * result.total_bytes / max(1, params):.3f} bits/param) "
          f"in {time.perf_counter() - start:.1f} s")


def decompress(input_path: str) -> None:
    from nnlc.decoder.files import decode_file

    start = time.perf_counter()
    size = decode_file(input_path, _need_output(), FLAGS.structure, FLAGS.quantized, quiet=FLAGS.quiet,
                       limits=_limits(), external_data=FLAGS.external_data)
    print(f"{input_path} -> {FLAGS.output}: {size} bytes in {time.perf_counter() - start:.2f} s")


def _limits() -> Limits:
    try:
        return limits_from({field.name: getattr(FLAGS, field.name) for field in dataclasses.fields(Limits)})
    except ValueError as error:
        raise NnlcError(str(error)) from None


def format_inspection(facts: dict) -> str:
    """The `nnlc inspect` table: one row per tensor."""
    header = f"{'name':<48} {'shape':<18} {'role':<16} {'mode':<9} {'bytes':>9} {'bits/param':>10} {'step':>10}"
    lines = [f"producer: {facts['producer']}", f"bytes: {facts['bytes']}  topology: {facts['topology_bytes']}  "
             f"tensors: {facts['tensor_count']}", header, "-" * len(header)]
    for row in facts["tensors"]:
        step = f"{row['step']:.3g}" if row["step"] is not None else "-"
        lines.append(f"{row['name'][-48:]:<48} {'x'.join(map(str, row['shape'])) or 'scalar':<18} {row['role']:<16} "
                     f"{row['mode']:<9} {row['bytes']:>9} {row['bits_per_param']:>10.3f} {step:>10}")
    params = sum(row["params"] for row in facts["tensors"])
    lines.append(f"total: {params} params, {8 * facts['bytes'] / max(1, params):.3f} bits/param")
    return "\n".join(lines)


def inspect(input_path: str) -> None:
    from nnlc.decoder import inspect_bitstream
    from nnlc.decoder.files import read_bytes

    facts = inspect_bitstream(read_bytes(input_path), _limits())
    print(json.dumps(facts, indent=1) if FLAGS.json else format_inspection(facts))


def main(argv: list[str]) -> None:
    if len(argv) != 3 or argv[1] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    command, input_path = argv[1], argv[2]
    try:
        {"compress": compress, "decompress": decompress, "inspect": inspect, "analyze": analyze}[command](input_path)
    except NnlcError as error:
        print(f"nnlc {command}: error: {error}", file=sys.stderr)
        sys.exit(1)


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
