"""`nnlc-decode IN.nnlc -o OUT.onnx [--structure ORIG.onnx] [--quantized] [--external_data] [--max_...=N]`.

The standalone decoder CLI. The `--max_*` flags lower (or raise) the caps of `nnlc.decoder.Limits`
for untrusted input.

Uses argparse, not absl, and imports only numpy, onnx, constriction and the standard library.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from nnlc.decoder.decode import Limits
from nnlc.errors import NnlcError

LIMIT_HELP = {
    "max_tensor_elements": "refuse tensors with more elements",
    "max_total_bytes": "refuse bitstreams whose tensors decode to more bytes (8 per element)",
    "max_topology_bytes": "refuse topologies that decompress to more bytes",
    "max_units": "refuse bitstreams with more units",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnlc-decode", description="Decode an .nnlc bitstream to ONNX.")
    parser.add_argument("bitstream", help="input .nnlc file")
    parser.add_argument("-o", "--output", required=True, help="output .onnx file")
    parser.add_argument("--structure", help="original ONNX model (needed when the bitstream carries no topology)")
    parser.add_argument("--quantized", action="store_true",
                        help="write integer weights + DequantizeLinear instead of float weights")
    parser.add_argument("--external_data", action="store_true",
                        help="write tensors to OUT.onnx.data (always done for models of 2 GiB or more)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    for field in dataclasses.fields(Limits):
        parser.add_argument(f"--{field.name}", type=int, default=field.default, metavar="N",
                            help=f"{LIMIT_HELP.get(field.name, field.name)} (default {field.default})")
    return parser


def limits_from(values: dict) -> Limits:
    """Limits from a mapping holding a value for each of its fields (argparse or absl flags)."""
    return Limits(**{field.name: values[field.name] for field in dataclasses.fields(Limits)})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from nnlc.decoder.files import decode_file

    try:
        limits = limits_from(vars(args))
    except ValueError as error:
        parser.error(str(error))
    try:
        start = time.perf_counter()
        model_bytes = decode_file(args.bitstream, args.output, args.structure, args.quantized, quiet=args.quiet,
                                  limits=limits, external_data=args.external_data)
        if not args.quiet:
            print(f"wrote {args.output} ({model_bytes} bytes) in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    except NnlcError as error:
        print(f"nnlc-decode: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
