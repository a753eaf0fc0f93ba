"""`nnlc-decode IN.nnlc -o OUT.onnx [--structure ORIG.onnx] [--quantized]`: the standalone decoder CLI.

Uses argparse, not absl, and imports only numpy, onnx, constriction and the standard library.
"""

from __future__ import annotations

import argparse
import sys
import time

from nnlc.errors import NnlcError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnlc-decode", description="Decode an .nnlc bitstream to ONNX.")
    parser.add_argument("bitstream", help="input .nnlc file")
    parser.add_argument("-o", "--output", required=True, help="output .onnx file")
    parser.add_argument("--structure", help="original ONNX model (needed when the bitstream carries no topology)")
    parser.add_argument("--quantized", action="store_true",
                        help="write integer weights + DequantizeLinear instead of float weights")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnlc.decoder.files import decode_file

    try:
        start = time.perf_counter()
        model_bytes = decode_file(args.bitstream, args.output, args.structure, args.quantized, quiet=args.quiet)
        if not args.quiet:
            print(f"wrote {args.output} ({model_bytes} bytes) in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    except NnlcError as error:
        print(f"nnlc-decode: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
