"""`nnlc` command line: compress, decompress and inspect.

  nnlc compress IN.onnx -o OUT.nnlc [--qp=-38 | --bits_per_param=6] [--no_topology] [--lossless=NAME,...]
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

COMMANDS = ("compress", "decompress", "inspect")
USAGE = "usage: nnlc {compress,decompress,inspect} INPUT [-o OUTPUT] [flags]; see nnlc --helpfull"


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


def compress(input_path: str) -> None:
    from nnlc import encoder, onnx_io
    from nnlc.decoder.files import atomic_write

    output = _need_output()
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
        {"compress": compress, "decompress": decompress, "inspect": inspect}[command](input_path)
    except NnlcError as error:
        print(f"nnlc {command}: error: {error}", file=sys.stderr)
        sys.exit(1)


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
